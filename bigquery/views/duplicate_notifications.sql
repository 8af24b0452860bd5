-- duplicate_notifications: object generations whose finalize was delivered as more than one
-- Pub/Sub message (distinct delivery ids). Storage notifications are at-least-once, and a replay
-- from the dead-letter topic publishes a new message; tally must announce the run once anyway.
-- Retries of one message are not duplicates (same delivery id): see the deliveries view.
WITH unique_rows AS (
  SELECT *
  FROM `${dataset}.events`
  WHERE event_type = 'OBJECT_FINALIZE' AND generation IS NOT NULL
  QUALIFY ROW_NUMBER() OVER (PARTITION BY insert_id ORDER BY received_time) = 1
)
SELECT
  bucket,
  object,
  generation,
  ANY_VALUE(workflow) AS workflow,
  ANY_VALUE(version) AS version,
  ANY_VALUE(run_id) AS run_id,
  ANY_VALUE(output_path) AS output_path,
  COUNT(DISTINCT delivery_id) AS deliveries,
  COUNT(DISTINCT IF(COALESCE(replayed, FALSE), delivery_id, NULL)) AS replayed_deliveries,
  COUNT(*) AS attempts,
  STRING_AGG(DISTINCT outcome, ',' ORDER BY outcome) AS outcomes,
  STRING_AGG(DISTINCT delivery_id, ',' ORDER BY delivery_id) AS delivery_ids,
  MIN(received_time) AS first_received_time,
  MAX(received_time) AS last_received_time
FROM unique_rows
GROUP BY bucket, object, generation
HAVING COUNT(DISTINCT delivery_id) > 1
