-- run_status: one row per run (workflow, version, run_id) seen in the event log or the runs table.
--
-- state (docs/design.md, "Announcing a run"): the run_state of the run's latest event row, where
-- the handler wrote one (rows since revisions), else derived as before revisions existed:
--   ANNOUNCING         claimed, not yet marked: a runs row whose announcement no event row has
--                      logged yet while the run's rows still say RUNNING, or rows saying so;
--                      `last_detail` names the claimant, `claimed_time` is the claim's time;
--   COMPLETE / FAILED  the latest revision was announced and the bucket still matched it;
--   CHANGED            announced, then an output changed; not re-announced yet (see revision);
--   BLOCKED            a foreign object sits where the manifest belongs (last_detail names it);
--   STALLED            not announced, and reconciliation logged a `stalled` row (past the spec's
--                      deadline_minutes; its detail lists what is missing);
--   RUNNING            anything else: outputs are arriving.
-- revision: the latest revision announced (runs) or seen (events).
-- outputs_seen counts distinct output paths of finalize deliveries whose outcome says an expected
-- output arrived (recorded, completed, after-completion); unexpected_seen counts `unexpected` ones.
-- The spec (what is expected) lives in the registry, not in BigQuery: `outputs_in_manifest` is the
-- announced manifest's count, and `tally status` compares the bucket with the spec.
-- first_event_time is the time of the run's earliest event row (event_time, else received_time);
-- first_output_time, from the announced revision (runs), is the creation time of the run's
-- earliest object: two different instants.
-- completion_seconds = announced_time - first_output_time: NULL until the run is announced, and
-- for a run none of whose listed objects had a readable creation time (first_output_time NULL).
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
latest_state AS (
  SELECT workflow, version, run_id, run_state AS last_state, revision AS last_revision
  FROM unique_rows
  WHERE run_state IS NOT NULL
  QUALIFY ROW_NUMBER() OVER (
    PARTITION BY workflow, version, run_id
    ORDER BY received_time DESC, insert_id DESC
  ) = 1
),
announcements_logged AS (
  SELECT DISTINCT workflow, version, run_id, idempotency_key
  FROM unique_rows
  WHERE outcome IN ('completed', 'failed', 'reconciled', 'revised')
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
  -- The latest revision (rows written before revisions have none: the first one counts).
  SELECT *
  FROM `${dataset}.runs`
  WHERE TRUE
  QUALIFY ROW_NUMBER() OVER (
    PARTITION BY workflow, version, run_id ORDER BY COALESCE(revision, 1) DESC, announced_time
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
    WHEN a.idempotency_key IS NOT NULL AND al.idempotency_key IS NULL
      AND s.last_state IN ('RUNNING', 'ANNOUNCING') THEN 'ANNOUNCING'
    -- a delivery that saw the run open may log after the one that announced it
    WHEN s.last_state = 'RUNNING' AND al.idempotency_key IS NOT NULL THEN a.state
    WHEN s.last_state = 'RUNNING' AND p.stalled_time IS NOT NULL THEN 'STALLED'
    WHEN s.last_state IS NOT NULL THEN s.last_state
    WHEN a.state IS NOT NULL THEN a.state
    WHEN p.failed_logged THEN 'FAILED'
    WHEN p.completed_logged THEN 'COMPLETE'
    WHEN p.stalled_time IS NOT NULL THEN 'STALLED'
    ELSE 'RUNNING'
  END AS state,
  CASE
    WHEN a.idempotency_key IS NOT NULL OR s.last_revision IS NOT NULL
      THEN GREATEST(COALESCE(a.revision, 1), COALESCE(s.last_revision, 0))
  END AS revision,
  IF(al.idempotency_key IS NULL, a.announced_time, NULL) AS claimed_time,
  p.first_event_time,
  a.first_output_time,
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
  TIMESTAMP_DIFF(a.announced_time, a.first_output_time, MILLISECOND) / 1000.0 AS completion_seconds
FROM run_keys AS k
LEFT JOIN per_run AS p USING (workflow, version, run_id)
LEFT JOIN last_row AS l USING (workflow, version, run_id)
LEFT JOIN announced AS a USING (workflow, version, run_id)
LEFT JOIN latest_state AS s USING (workflow, version, run_id)
LEFT JOIN announcements_logged AS al
  ON al.workflow = k.workflow AND al.version = k.version AND al.run_id = k.run_id
  AND al.idempotency_key = a.idempotency_key
