-- Admit a batch of messages to a bounded queue, atomically (lib/src/celery_floodgate/batch.py).
-- KEYS: the queue's priority sub-lists, then its ticket key.
-- ARGV: bound, drain rate (0: unknown), longest Retry-After, one turnover of the queue in
-- seconds, slots handed out in-process, then for each message in submission order: index
-- of its target list, message.
-- Pushes the first (bound - depth) messages, in order, and refuses the rest; the first
-- refused draws one ticket in the queue's waiting line (line.lua), as admit.lua does for
-- one message. Returns {admitted, depth before, seconds to the ticket, or '-1' if the
-- rate is unknown, or '' if none was refused}.
local lists = #KEYS - 1
local depth = 0
for i = 1, lists do depth = depth + redis.call('LLEN', KEYS[i]) end
local bound = tonumber(ARGV[1])
local n = (#ARGV - 5) / 2
local room = bound - depth
if room < 0 then room = 0 end
local admitted = math.min(n, room)
for m = 1, admitted do
  redis.call('LPUSH', KEYS[tonumber(ARGV[4 + 2 * m])], ARGV[5 + 2 * m])
end
if admitted == n then return {admitted, depth, ''} end
local rate = tonumber(ARGV[2])
if rate <= 0 then return {admitted, depth, '-1'} end
local wait = line_ticket(KEYS[#KEYS], math.max(1, depth + admitted - bound + 1), rate,
                         tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]))
return {admitted, depth, tostring(wait)}
