-- Admit one message to a bounded queue, atomically (lib/src/celery_floodgate/transports/redis.py).
-- KEYS: the queue's priority sub-lists, then its ticket key.
-- ARGV: bound, index of the target list, message, drain rate (0: unknown), longest
-- Retry-After, one turnover of the queue in seconds, slots handed out in-process.
-- Returns {1, depth} when pushed; {0, depth, seconds to the ticket or '-1'} when refused.
-- A refusal draws its ticket here (line.lua), so it costs one round trip, like an admission.
local lists = #KEYS - 1
local depth = 0
for i = 1, lists do depth = depth + redis.call('LLEN', KEYS[i]) end
local bound = tonumber(ARGV[1])
if depth < bound then
  redis.call('LPUSH', KEYS[tonumber(ARGV[2])], ARGV[3])
  return {1, depth + 1}
end
local rate = tonumber(ARGV[4])
if rate <= 0 then return {0, depth, '-1'} end
local wait = line_ticket(KEYS[#KEYS], math.max(1, depth - bound + 1), rate,
                         tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]))
return {0, depth, tostring(wait)}
