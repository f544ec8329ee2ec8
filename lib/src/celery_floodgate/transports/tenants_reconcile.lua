-- Repair drift between a queue's tenant counts and the broker's depth
-- (lib/src/celery_floodgate/tenants.py, MeterTenancy.reconcile: the rules are stated there).
-- KEYS[1]: the queue's tenant hash (fields: tenants_reserve.lua; "out" counts the places
--   workers' receipts took back, "x_excess", "x_out", "x_at" the previous reading).
-- ARGV: the broker's depth (ready messages), "seq" read just before it, quiet_s (no
--   reservation within it: none can still be on its way to the broker).
-- Returns {how many places were removed, total after}.
local key = KEYS[1]
local depth, seq_before, quiet_s = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local flat = redis.call('HGETALL', key)
local counts, f = {}, {}
local total = 0
for i = 1, #flat, 2 do
  local name, v = flat[i], tonumber(flat[i + 1])
  if string.sub(name, 1, 2) == 't:' then
    if v <= 0 then redis.call('HDEL', key, name)  -- never negative, never a 0 kept
    else counts[name] = v; total = total + v end
  else f[name] = v end
end
redis.call('HSET', key, 'depth', depth, 'depth_at', tostring(now))
local quiet = (f.seq or 0) == seq_before and now - (f.at or 0) >= quiet_s
if not quiet then return {0, total} end  -- a place may be on its way: nothing to compare
if depth == 0 then
  -- Empty, and every place counted has reached the broker: each was received or lost.
  for name, _ in pairs(counts) do redis.call('HDEL', key, name) end
  if total > 0 then redis.call('HINCRBY', key, 'epoch', 1) end
  redis.call('HDEL', key, 'x_excess', 'x_out', 'x_at')
  return {total, 0}
end
-- Over the depth by receipts not yet flushed (taken back within a flush) and by lost ones
-- (kept): what was over at a reading a flush ago, less what was taken back since, is lost.
local excess, out, prev_at = total - depth, f.out or 0, f.x_at
if prev_at and now - prev_at < 1.0 then return {0, total} end
local removed = 0
if excess > 0 and prev_at and now - prev_at <= 30 then
  local lost = math.min(excess, f.x_excess - (out - f.x_out))
  if lost > 0 then  -- taken from each tenant in proportion to its count, rounded down
    for name, v in pairs(counts) do
      local cut = math.floor(lost * v / total)
      if cut > 0 then
        if v - cut <= 0 then redis.call('HDEL', key, name)
        else redis.call('HINCRBY', key, name, -cut) end
        removed = removed + cut
      end
    end
  end
end
if excess - removed > 0 then
  redis.call('HSET', key, 'x_excess', excess - removed, 'x_out', out, 'x_at', tostring(now))
else
  redis.call('HDEL', key, 'x_excess', 'x_out', 'x_at')
end
return {removed, total - removed}
