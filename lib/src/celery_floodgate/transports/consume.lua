-- Take messages for a worker and record them as unacked, in one call (redis_consume.py).
--
-- KEYS[1] kombu's unacked_index (zset: delivery tag -> when fetched)
-- KEYS[2] kombu's unacked (hash: delivery tag -> [message, exchange, routing key])
-- KEYS[3..] the lists to pop from, in order (priority-major, as kombu's BRPOP names them)
-- ARGV[1] now (the worker's clock, as kombu's QoS.append uses)
-- ARGV[2] how many messages to pop at most
-- ARGV[3] a, the number of acked delivery tags that follow; ARGV[4 .. 3+a] the tags
-- ARGV[4+a ..] pairs (list index, message) already popped by BRPOP, to record first
--
-- Returns a flat list of (list index, message, recorded 0/1) triples. A message is
-- recorded exactly as kombu's QoS.append records it (ZADD + HSET), so kombu's
-- restore_visible, restore_by_tag and restore_unacked work on it unchanged; one that
-- cannot be decoded here is returned unrecorded, and the worker records it kombu's way.
local index, unacked = KEYS[1], KEYS[2]
local now = ARGV[1]
local want = tonumber(ARGV[2])
local nacks = tonumber(ARGV[3])

for i = 1, nacks, 1000 do
  local chunk = {}
  for j = i, math.min(i + 999, nacks) do chunk[#chunk + 1] = ARGV[3 + j] end
  redis.call('ZREM', index, unpack(chunk))
  redis.call('HDEL', unacked, unpack(chunk))
end

local out = {}
local function record(list_index, payload)
  local recorded = 0
  local ok, msg = pcall(cjson.decode, payload)
  if ok and type(msg) == 'table' and type(msg.properties) == 'table' then
    local tag, info = msg.properties.delivery_tag, msg.properties.delivery_info
    if type(tag) == 'string' and type(info) == 'table' then
      redis.call('ZADD', index, now, tag)
      redis.call('HSET', unacked, tag, '[' .. payload .. ',' .. cjson.encode(info.exchange)
                 .. ',' .. cjson.encode(info.routing_key) .. ']')
      recorded = 1
    end
  end
  out[#out + 1] = list_index
  out[#out + 1] = payload
  out[#out + 1] = recorded
end

for i = 4 + nacks, #ARGV, 2 do
  record(tonumber(ARGV[i]), ARGV[i + 1])
end

for k = 3, #KEYS do
  if want <= 0 then break end
  local got = redis.call('RPOP', KEYS[k], want)  -- right end, as BRPOP (Redis >= 6.2)
  if got then
    for _, payload in ipairs(got) do record(k - 2, payload) end
    want = want - #got
  end
end
return out
