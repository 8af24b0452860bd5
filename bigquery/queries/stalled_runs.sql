-- stalled_runs: runs past their spec's deadline and not announced, oldest first, with what is missing.
-- @param workflow STRING = ''  only this workflow ('' for all)
SELECT
  workflow,
  version,
  run_id,
  stalled_time,
  first_event_time,
  last_event_time,
  outputs_seen,
  stalled_detail
FROM `${dataset}.run_status`
WHERE state = 'STALLED'
  AND (@workflow = '' OR workflow = @workflow)
ORDER BY stalled_time, workflow, version, run_id
