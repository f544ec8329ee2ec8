-- Each tenant's holding of a queue, as admit_fair.lua counts it (read only).
-- KEYS: per list of the queue: the list, its seq, its active set.
-- ARGV[1]: the prefix of the tenants' sets ("<prefix>:fair:"; a set is
--   <prefix>:fair:<list>:t:<tenant>).
-- Returns a flat list of tenant, count pairs (a tenant in several lists summed).
local counts, order = {}, {}
for i = 1, #KEYS, 3 do
  local head = tonumber(redis.call('GET', KEYS[i + 1]) or '0') - redis.call('LLEN', KEYS[i])
  for _, name in ipairs(redis.call('ZRANGEBYSCORE', KEYS[i + 2], '(' .. head, '+inf')) do
    local n = redis.call('ZCOUNT', ARGV[1] .. KEYS[i] .. ':t:' .. name, '(' .. head, '+inf')
    if counts[name] == nil then order[#order + 1] = name; counts[name] = 0 end
    counts[name] = counts[name] + n
  end
end
local out = {}
for _, name in ipairs(order) do
  if counts[name] > 0 then out[#out + 1] = name; out[#out + 1] = counts[name] end
end
return out
