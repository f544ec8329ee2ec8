-- Admit one message to a bounded SQS queue (lib/src/celery_floodgate/transports/sqs.py).
-- SQS has no length cap, so the limit is kept here: a sorted set of the admission ids
-- of the messages sent and not yet deleted, scored by admission time.
-- KEYS: the queue's admission set, then its ticket key.
-- ARGV: bound, admission id, drain rate (0: unknown), longest Retry-After, one
-- turnover of the queue in seconds, slots handed out in-process (line.lua).
-- Returns {1, count} when admitted (the caller then sends); {0, count, seconds to the
-- ticket or '-1'} when refused. Check and add are one step: no submitter can slip past.
local count = redis.call('ZCARD', KEYS[1])
local bound = tonumber(ARGV[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
if count < bound then
  redis.call('ZADD', KEYS[1], now, ARGV[2])
  return {1, count + 1}
end
local rate = tonumber(ARGV[3])
if rate <= 0 then return {0, count, '-1'} end
local wait = line_ticket(KEYS[2], math.max(1, count - bound + 1), rate, tonumber(ARGV[4]),
                         tonumber(ARGV[5]), tonumber(ARGV[6]))
return {0, count, tostring(wait)}
