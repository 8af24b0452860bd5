-- run_status: one row per run (workflow, version, run_id) seen in the event log or the runs table.
--
-- state:
--   COMPLETE / FAILED  the run was announced (the runs table; else an event row with outcome
--                      completed, reconciled or failed, in case the runs row was not written);
--   STALLED            not announced, and reconciliation logged a `stalled` row (past the spec's
--                      deadline_minutes; its detail lists what is missing);
--   RUNNING            anything else: outputs are arriving.
-- outputs_seen counts distinct output paths of finalize deliveries whose outcome says an expected
-- output arrived (recorded, completed, after-completion); unexpected_seen counts `unexpected` ones.
-- The spec (what is expected) lives in the registry, not in BigQuery: `outputs_in_manifest` is the
-- announced manifest's count, and `tally status` compares the bucket with the spec.
-- completion_seconds = announced_time - first_event_time (the run's earliest output).
WITH unique_rows AS (
  SELECT *
  FROM `${dataset}.events`
  WHERE workflow IS NOT NULL AND version IS NOT NULL AND run_id IS NOT NULL
  QUALIFY ROW_NUMBER() OVER (PARTITION BY insert_id ORDER BY received_time) = 1
),
per_run AS (
  SELECT
    workflow,
    version,
    run_id,
    ANY_VALUE(bucket) AS bucket,
    MIN(COALESCE(event_time, received_time)) AS first_event_time,
    MAX(COALESCE(event_time, received_time)) AS last_event_time,
    MAX(received_time) AS last_received_time,
    COUNT(DISTINCT delivery_id) AS deliveries,
    COUNT(DISTINCT IF(
      outcome IN ('recorded', 'completed', 'after-completion')
        AND COALESCE(event_type, 'OBJECT_FINALIZE') = 'OBJECT_FINALIZE',
      output_path, NULL)) AS outputs_seen,
    COUNT(DISTINCT IF(outcome = 'unexpected', output_path, NULL)) AS unexpected_seen,
    COUNTIF(outcome = 'deferred') AS deferred_rows,
    COUNTIF(outcome = 'unknown-workflow') AS unknown_workflow_rows,
    MIN(IF(outcome = 'stalled', received_time, NULL)) AS stalled_time,
    MAX(IF(outcome = 'stalled', detail, NULL)) AS stalled_detail,
    LOGICAL_OR(outcome = 'failed') AS failed_logged,
    LOGICAL_OR(outcome IN ('completed', 'reconciled')) AS completed_logged
  FROM unique_rows
  GROUP BY workflow, version, run_id
),
last_row AS (
  SELECT workflow, version, run_id, outcome AS last_outcome, detail AS last_detail
  FROM unique_rows
  WHERE TRUE
  QUALIFY ROW_NUMBER() OVER (
    PARTITION BY workflow, version, run_id
    ORDER BY received_time DESC, insert_id DESC
  ) = 1
),
announced AS (
  SELECT *
  FROM `${dataset}.runs`
  WHERE TRUE
  QUALIFY ROW_NUMBER() OVER (
    PARTITION BY workflow, version, run_id ORDER BY announced_time
  ) = 1
),
run_keys AS (
  SELECT workflow, version, run_id FROM per_run
  UNION DISTINCT
  SELECT workflow, version, run_id FROM announced
)
SELECT
  k.workflow,
  k.version,
  k.run_id,
  COALESCE(a.bucket, p.bucket) AS bucket,
  CASE
    WHEN a.status IS NOT NULL THEN a.status
    WHEN p.failed_logged THEN 'FAILED'
    WHEN p.completed_logged THEN 'COMPLETE'
    WHEN p.stalled_time IS NOT NULL THEN 'STALLED'
    ELSE 'RUNNING'
  END AS state,
  COALESCE(a.first_event_time, p.first_event_time) AS first_event_time,
  p.last_event_time,
  p.last_received_time,
  COALESCE(p.deliveries, 0) AS deliveries,
  COALESCE(p.outputs_seen, 0) AS outputs_seen,
  COALESCE(p.unexpected_seen, 0) AS unexpected_seen,
  a.outputs_count AS outputs_in_manifest,
  COALESCE(p.deferred_rows, 0) AS deferred_rows,
  COALESCE(p.unknown_workflow_rows, 0) AS unknown_workflow_rows,
  p.stalled_time,
  p.stalled_detail,
  l.last_outcome,
  l.last_detail,
  a.outcome AS announced_by,
  a.announced_time,
  a.idempotency_key,
  TIMESTAMP_DIFF(a.announced_time, COALESCE(a.first_event_time, p.first_event_time), MILLISECOND)
    / 1000.0 AS completion_seconds
FROM run_keys AS k
LEFT JOIN per_run AS p USING (workflow, version, run_id)
LEFT JOIN last_row AS l USING (workflow, version, run_id)
LEFT JOIN announced AS a USING (workflow, version, run_id)
