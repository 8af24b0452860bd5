-- rejected_recent: the latest deliveries rejected as malformed, newest first; detail says what was wrong.
-- @param hours INT64 = 24  how many hours back
-- @param limit INT64 = 100  at most this many rows
SELECT
  received_time,
  delivery_id,
  delivery_attempt,
  source,
  subscription,
  event_type,
  bucket,
  object,
  detail
FROM `${dataset}.events`
WHERE outcome = 'rejected'
  AND received_time >= TIMESTAMP_SUB(CURRENT_TIMESTAMP(), INTERVAL @hours HOUR)
QUALIFY ROW_NUMBER() OVER (PARTITION BY insert_id ORDER BY received_time) = 1
ORDER BY received_time DESC, delivery_id
LIMIT @limit
