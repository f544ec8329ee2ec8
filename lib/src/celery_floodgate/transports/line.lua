-- The virtual waiting line of refused callers (lib/src/celery_floodgate/guard.py), included
-- by the scripts that refuse. Returns the seconds until this caller's slot: the next
-- slot the drain rate frees after those already handed out, skipping ``pending``
-- slots the caller's process handed out itself (lib/src/celery_floodgate/memo.py), never
-- sooner than the queue's excess drains, and never past one turnover of the queue
-- (``horizon_s``) or ``max_s``.
local function line_ticket(key, excess, rate, max_s, horizon_s, pending)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
  local slot = tonumber(redis.call('GET', key) or '0') + pending / rate
  if slot < now + excess / rate then slot = now + excess / rate end
  local latest = now + math.min(max_s, math.max(horizon_s, excess / rate))
  if slot > latest then slot = latest end
  redis.call('SET', key, tostring(slot + 1 / rate), 'EX', 3600)
  return slot - now
end
