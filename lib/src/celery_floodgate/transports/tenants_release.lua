-- Take places back from tenants' counts (lib/src/celery_floodgate/tenants.py): a
-- reservation whose publish failed, or messages workers received (flushed every quarter second).
-- KEYS[1]: the queue's tenant hash (fields: tenants_reserve.lua).
-- ARGV: consumed (1: workers received them, 0: a reservation undone), then triples
--   (tenant, epoch of the reservation, n).
-- A count never goes below 0 (a field at 0 is removed), and a place reserved before the
-- last reset (another epoch) is not taken back: the reset already cleared it.
local key = KEYS[1]
local epoch = tonumber(redis.call('HGET', key, 'epoch') or '0')
local taken = 0
for i = 2, #ARGV, 3 do
  if tonumber(ARGV[i + 1]) == epoch then
    local field = 't:' .. ARGV[i]
    local have = tonumber(redis.call('HGET', key, field) or '0')
    local n = math.min(have, tonumber(ARGV[i + 2]))
    if have - n <= 0 then redis.call('HDEL', key, field)
    else redis.call('HINCRBY', key, field, -n) end
    taken = taken + n
  end
end
if ARGV[1] == '1' and taken > 0 then redis.call('HINCRBY', key, 'out', taken) end
return taken
