-- listing_costs: the runs that read the most list entries, and why their deliveries listed the whole run folder.
-- @param days INT64 = 7  deliveries received in the last this many days
-- @param limit INT64 = 20  at most this many runs
-- @param workflow STRING = ''  only this workflow ('' for all)
WITH attempts AS (
  SELECT
    workflow,
    version,
    run_id,
    storage_list_entries,
    storage_operations,
    listing_reason
  FROM `${dataset}.events`
  WHERE received_time >= TIMESTAMP_SUB(CURRENT_TIMESTAMP(), INTERVAL @days DAY)
    AND run_id IS NOT NULL
    AND (@workflow = '' OR workflow = @workflow)
  QUALIFY ROW_NUMBER() OVER (PARTITION BY insert_id ORDER BY received_time) = 1
)
SELECT
  workflow,
  version,
  run_id,
  COUNT(*) AS attempts,
  SUM(storage_operations) AS storage_operations,
  SUM(storage_list_entries) AS list_entries,
  COUNTIF(listing_reason IS NOT NULL) AS listings,
  COUNTIF(listing_reason = 'first') AS first_listings,
  COUNTIF(listing_reason = 'urgent') AS urgent_listings,
  COUNTIF(listing_reason = 'due') AS due_listings,
  COUNTIF(listing_reason = 'quiet') AS quiet_listings
FROM attempts
GROUP BY workflow, version, run_id
ORDER BY list_entries DESC, workflow, version, run_id
LIMIT @limit
