-- deliveries: one row per delivery id (Pub/Sub message id), with its final outcome.
--
-- The final outcome is the latest attempt's row: a delivery deferred twice and then recorded has
-- outcome `recorded` and attempts 3. A delivery whose final outcome is `deferred` and whose last
-- row has last_attempt = true went to the dead-letter topic (dead_lettered = true).
-- Rows are first de-duplicated by insert_id: BigQuery de-duplicates insertId only best-effort
-- (and the local emulator not at all), so a retried log write may appear twice.
WITH unique_rows AS (
  SELECT *
  FROM `${dataset}.events`
  WHERE TRUE
  QUALIFY ROW_NUMBER() OVER (PARTITION BY insert_id ORDER BY received_time) = 1
),
per_delivery AS (
  SELECT
    delivery_id,
    COUNT(*) AS attempts,
    COUNTIF(outcome = 'deferred') AS deferred_attempts,
    MIN(received_time) AS first_received_time,
    MAX(received_time) AS last_received_time,
    LOGICAL_OR(COALESCE(replayed, FALSE)) AS replayed,
    SUM(storage_operations) AS storage_operations,
    SUM(duration_ms) AS duration_ms
  FROM unique_rows
  GROUP BY delivery_id
),
latest AS (
  SELECT *
  FROM unique_rows
  WHERE TRUE
  QUALIFY ROW_NUMBER() OVER (
    PARTITION BY delivery_id
    ORDER BY received_time DESC, COALESCE(delivery_attempt, 0) DESC, insert_id DESC
  ) = 1
)
SELECT
  latest.delivery_id,
  latest.outcome,
  latest.detail,
  latest.delivery_attempt AS final_attempt,
  per_delivery.attempts,
  per_delivery.deferred_attempts,
  latest.outcome = 'deferred' AND COALESCE(latest.last_attempt, FALSE) AS dead_lettered,
  per_delivery.replayed,
  latest.source,
  latest.publish_time,
  per_delivery.first_received_time,
  per_delivery.last_received_time,
  latest.event_type,
  latest.event_time,
  latest.bucket,
  latest.object,
  latest.generation,
  latest.workflow,
  latest.version,
  latest.run_id,
  latest.output_path,
  latest.idempotency_key,
  per_delivery.storage_operations,
  per_delivery.duration_ms,
  latest.handler_version
FROM latest
JOIN per_delivery USING (delivery_id)
