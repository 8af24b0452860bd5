-- completion_latency: per day of announcement, percentiles of the time from a run's first output
-- (runs.first_output_time) to its announcement (runs.announced_time), in seconds.
-- One row per (day, workflow), plus one row per day with workflow NULL for all workflows.
-- APPROX_QUANTILES is approximate on large inputs (exact on small ones).
WITH announced AS (
  SELECT
    workflow,
    DATE(announced_time) AS day,
    TIMESTAMP_DIFF(announced_time, first_output_time, MILLISECOND) / 1000.0 AS seconds
  FROM `${dataset}.runs`
  WHERE first_output_time IS NOT NULL
  QUALIFY ROW_NUMBER() OVER (PARTITION BY run_key ORDER BY announced_time) = 1
),
per_workflow AS (
  SELECT
    day,
    workflow,
    COUNT(*) AS runs,
    APPROX_QUANTILES(seconds, 100)[OFFSET(50)] AS p50_seconds,
    APPROX_QUANTILES(seconds, 100)[OFFSET(90)] AS p90_seconds,
    APPROX_QUANTILES(seconds, 100)[OFFSET(99)] AS p99_seconds,
    MAX(seconds) AS max_seconds
  FROM announced
  GROUP BY day, workflow
),
-- all_workflows repeats per_workflow's aggregates: SQL cannot name a list of aggregates to reuse,
-- and GROUP BY ROLLUP(day, workflow) would add a grand-total row. Keep the two lists alike
-- (tests/integration/test_views.py checks the view).
all_workflows AS (
  SELECT
    day,
    CAST(NULL AS STRING) AS workflow,
    COUNT(*) AS runs,
    APPROX_QUANTILES(seconds, 100)[OFFSET(50)] AS p50_seconds,
    APPROX_QUANTILES(seconds, 100)[OFFSET(90)] AS p90_seconds,
    APPROX_QUANTILES(seconds, 100)[OFFSET(99)] AS p99_seconds,
    MAX(seconds) AS max_seconds
  FROM announced
  GROUP BY day
)
SELECT * FROM per_workflow
UNION ALL
SELECT * FROM all_workflows
