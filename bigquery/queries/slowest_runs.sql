-- slowest_runs: announced runs with the longest time from first output to announcement.
-- @param days INT64 = 7  runs announced in the last this many days
-- @param limit INT64 = 20  at most this many runs
-- @param workflow STRING = ''  only this workflow ('' for all)
SELECT
  workflow,
  version,
  run_id,
  state,
  completion_seconds,
  first_output_time,
  announced_time,
  announced_by,
  deliveries,
  outputs_seen
FROM `${dataset}.run_status`
WHERE announced_time >= TIMESTAMP_SUB(CURRENT_TIMESTAMP(), INTERVAL @days DAY)
  AND completion_seconds IS NOT NULL
  AND (@workflow = '' OR workflow = @workflow)
ORDER BY completion_seconds DESC, workflow, version, run_id
LIMIT @limit
