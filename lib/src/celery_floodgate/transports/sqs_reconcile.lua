-- Repair drift between an SQS queue's admission set and SQS's own count
-- (lib/src/celery_floodgate/transports/sqs.py, Reconciler).
-- KEYS[1]: the admission set; KEYS[2]: the drift seen by the previous reading.
-- ARGV: SQS's count (visible + in flight + delayed), read at least a second ago;
-- the set's size read just before that; the lag (s) within which SQS may not yet
-- count a send; how long a reading's drift is remembered (s); a placeholder prefix.
-- Drift is repaired only when two readings in a row show it in the same direction,
-- and only by the smaller of the two, so a delete or send caught mid-way is never
-- mistaken for drift. Returns {trimmed, added, count after}.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local total = tonumber(ARGV[1])
local before = tonumber(ARGV[2])
local lag = tonumber(ARGV[3])
local count = redis.call('ZCARD', KEYS[1])
-- Ids admitted more than `lag` ago that SQS no longer holds: a lost count-down
-- (the deleting worker died, Redis did not answer), a purge, a send that failed
-- after its admission, the retention period. old - total is a lower bound on them.
local old = redis.call('ZCOUNT', KEYS[1], '-inf', now - lag)
local drift = 0
if old > total then
  drift = old - total
elseif total > math.max(before, count) then
  -- SQS holds messages no admission counted (sent around the guard, Redis lost its data).
  drift = -(total - math.max(before, count))
end
local prev = tonumber(redis.call('GET', KEYS[2]) or '0')
local trimmed, added = 0, 0
if drift > 0 and prev > 0 then
  trimmed = math.min(drift, prev)
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, trimmed - 1)  -- oldest first
  drift = drift - trimmed
elseif drift < 0 and prev < 0 then
  added = math.min(-drift, -prev)
  for i = 1, added do
    redis.call('ZADD', KEYS[1], now, ARGV[5] .. tostring(now) .. ':' .. i)
  end
  drift = drift + added
end
redis.call('SET', KEYS[2], tostring(drift), 'EX', tonumber(ARGV[4]))
return {trimmed, added, redis.call('ZCARD', KEYS[1])}
