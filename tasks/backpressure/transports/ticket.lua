-- A refused caller's ticket in the queue's virtual waiting line (tasks/backpressure/guard.py).
-- KEYS[1]: the line's next free slot (epoch s). ARGV: excess, drain rate, longest wait,
-- one turnover of the queue in seconds. Returns the seconds until this caller's slot.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local rate = tonumber(ARGV[2])
local slot = tonumber(redis.call('GET', KEYS[1]) or '0')
local earliest = now + tonumber(ARGV[1]) / rate
if slot < earliest then slot = earliest end
local latest = now + math.min(tonumber(ARGV[3]), math.max(tonumber(ARGV[4]), tonumber(ARGV[1]) / rate))
if slot > latest then slot = latest end
redis.call('SET', KEYS[1], tostring(slot + 1 / rate), 'EX', 3600)
return tostring(slot - now)
