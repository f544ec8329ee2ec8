-- Admit messages of one tenant and class to a bounded queue, fairly and atomically
-- (lib/src/celery_floodgate/transports/redis_fair.py; the rule: fairness.py, decide).
--
-- How a tenant's holding is counted, with no hook where messages leave: each list of the
-- queue is FIFO (LPUSH here, RPOP/BRPOP by workers, from the other end), so numbering
-- its admissions (seq) tells which are still in it: the last LLEN of them, those
-- numbered above head = seq - LLEN. A tenant's holding is the count of its numbers
-- above head (a sorted set per tenant and list); the tenants holding messages are those
-- whose newest number is above head (a sorted set per list). A consumed, purged or
-- expired message leaves the count with the LLEN that counted it: nothing can drift.
--
-- KEYS: the nl lists, the queue's line (ticket), the class's line, the tenant's line,
--   then per list i: its seq, its active set, the tenant's set.
-- ARGV: nl, bound, class bound, watermark depth, critical (1/0), tenant, its weight,
--   drain rate (0: unknown), longest Retry-After, one turnover in seconds, pending slots
--   of the queue's, the class's and the tenant's lines, ttl (s) of the sets, nw, then
--   nw pairs (tenant, weight), then per message: index of its list, message.
-- Returns {admitted, depth at the first refusal (or after the last admission),
--   seconds to the ticket ('-1' rate unknown, '' none refused), reason, holding, share}.
local nl = tonumber(ARGV[1])
local bound, cbound, wdepth = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local critical = ARGV[5] == '1'
local tenant, weight = ARGV[6], tonumber(ARGV[7])
local rate = tonumber(ARGV[8])
local ttl = tonumber(ARGV[14])
local nw = tonumber(ARGV[15])
local weights = {}
for j = 1, nw do weights[ARGV[14 + 2 * j]] = tonumber(ARGV[15 + 2 * j]) end
local first = 16 + 2 * nw

local function key(i, part) return KEYS[nl + 3 + 3 * (i - 1) + part] end  -- 1 seq, 2 active, 3 tenant

local depth, mine, busy = 0, 0, {}
for i = 1, nl do
  local len = redis.call('LLEN', KEYS[i])
  depth = depth + len
  local seq = redis.call('GET', key(i, 1))
  if seq then  -- else nothing was ever admitted here: no sets to read (most priority lists)
    local head = tonumber(seq) - len
    -- Numbers at or below head have left the list: forget them (amortised O(1)).
    redis.call('ZREMRANGEBYSCORE', key(i, 2), '-inf', head)
    redis.call('ZREMRANGEBYSCORE', key(i, 3), '-inf', head)
    mine = mine + redis.call('ZCARD', key(i, 3))
    if redis.call('EXISTS', key(i, 2)) == 1 then busy[#busy + 1] = i end
  end
end

-- The weights of the tenants holding messages, this one's included.
local function active_weight()
  local w = 0
  if #busy == 1 then  -- the usual case, one list in use: O(weighted tenants)
    w = redis.call('ZCARD', key(busy[1], 2))
    for name, wt in pairs(weights) do
      if redis.call('ZSCORE', key(busy[1], 2), name) then w = w + wt - 1 end
    end
  else
    local seen = {}
    for _, i in ipairs(busy) do
      for _, name in ipairs(redis.call('ZRANGE', key(i, 2), 0, -1)) do
        if not seen[name] then seen[name] = true; w = w + (weights[name] or 1) end
      end
    end
  end
  if mine == 0 then w = w + weight end
  return w
end

local n = (#ARGV - first + 1) / 2
local admitted, reason, excess, myshare, total = 0, '', 0, 0, nil
for m = 1, n do
  if depth >= cbound then
    reason = (cbound >= bound) and 'full' or 'class'
    excess = depth - cbound + 1
    break
  end
  if not critical and depth >= wdepth then
    total = total or active_weight()  -- changes only by this tenant's own first message
    myshare = math.max(1, math.floor(bound * weight / math.max(weight, total)))
    if mine >= myshare then
      reason, excess = 'share', mine - myshare + 1
      break
    end
  end
  local li = tonumber(ARGV[first + 2 * (m - 1)])
  local seq = redis.call('INCR', key(li, 1))
  redis.call('LPUSH', KEYS[li], ARGV[first + 2 * m - 1])
  redis.call('ZADD', key(li, 3), seq, seq)
  redis.call('ZADD', key(li, 2), seq, tenant)
  redis.call('EXPIRE', key(li, 3), ttl)
  redis.call('EXPIRE', key(li, 2), ttl)
  mine, depth, admitted = mine + 1, depth + 1, admitted + 1
end
if admitted == n then return {admitted, depth, '', '', mine, myshare} end
if rate <= 0 then return {admitted, depth, '-1', reason, mine, myshare} end
local line, line_rate, pending, horizon
if reason == 'share' then
  -- FIFO drains a tenant in proportion to what it holds: its line moves at that pace.
  line_rate = rate * mine / math.max(1, depth)
  line, pending, horizon = KEYS[nl + 3], tonumber(ARGV[13]), myshare / line_rate
elseif reason == 'class' then
  line, line_rate, pending, horizon = KEYS[nl + 2], rate, tonumber(ARGV[12]), cbound / rate
else
  line, line_rate, pending, horizon = KEYS[nl + 1], rate, tonumber(ARGV[11]), tonumber(ARGV[10])
end
local wait = line_ticket(line, excess, line_rate, tonumber(ARGV[9]), horizon, pending)
return {admitted, depth, tostring(wait), reason, mine, myshare}
