-- outcomes_by_day: deliveries per day and final outcome, with their attempts, replays and dead letters.
-- @param days INT64 = 7  how many days back
-- @param workflow STRING = ''  only this workflow ('' for all)
SELECT
  DATE(first_received_time) AS day,
  outcome,
  COUNT(*) AS deliveries,
  SUM(attempts) AS attempts,
  COUNTIF(replayed) AS replayed,
  COUNTIF(dead_lettered) AS dead_lettered
FROM `${dataset}.deliveries`
WHERE first_received_time >= TIMESTAMP_SUB(CURRENT_TIMESTAMP(), INTERVAL @days DAY)
  AND (@workflow = '' OR workflow = @workflow)
GROUP BY day, outcome
ORDER BY day DESC, deliveries DESC, outcome
