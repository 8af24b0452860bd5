-- dead_lettered: deliveries that went to the dead-letter topic, newest first; recovered = a later delivery of the same object generation (a replay, a duplicate) was processed.
-- @param days INT64 = 7  how many days back
-- @param workflow STRING = ''  only this workflow ('' for all)
WITH dead AS (
  SELECT *
  FROM `${dataset}.deliveries`
  WHERE dead_lettered
    AND last_received_time >= TIMESTAMP_SUB(CURRENT_TIMESTAMP(), INTERVAL @days DAY)
    AND (@workflow = '' OR workflow = @workflow)
),
processed AS (
  SELECT bucket, object, generation, MAX(last_received_time) AS processed_time
  FROM `${dataset}.deliveries`
  WHERE outcome != 'deferred' AND generation IS NOT NULL
  GROUP BY bucket, object, generation
)
SELECT
  dead.last_received_time AS dead_lettered_time,
  dead.delivery_id,
  dead.attempts,
  dead.bucket,
  dead.object,
  dead.generation,
  dead.workflow,
  dead.version,
  dead.run_id,
  dead.detail,
  processed.processed_time IS NOT NULL AS recovered
FROM dead
LEFT JOIN processed
  ON processed.bucket = dead.bucket
  AND processed.object = dead.object
  AND processed.generation = dead.generation
ORDER BY dead_lettered_time DESC, dead.delivery_id
