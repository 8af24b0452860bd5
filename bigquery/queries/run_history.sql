-- run_history: every logged delivery attempt of one run, oldest first (as `tally status` shows it).
-- @param run_id STRING  the run id
-- @param workflow STRING = ''  only this workflow ('' for any)
-- @param version STRING = ''  only this version ('' for any)
SELECT
  received_time,
  workflow,
  version,
  delivery_id,
  delivery_attempt,
  source,
  event_type,
  output_path,
  generation,
  outcome,
  detail,
  replayed,
  storage_operations,
  duration_ms
FROM `${dataset}.events`
WHERE run_id = @run_id
  AND (@workflow = '' OR workflow = @workflow)
  AND (@version = '' OR version = @version)
QUALIFY ROW_NUMBER() OVER (PARTITION BY insert_id ORDER BY received_time) = 1
ORDER BY received_time, delivery_id, delivery_attempt
