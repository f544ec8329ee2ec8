-- Reserve places for a tenant's messages in a queue whose total the broker bounds
-- (RabbitMQ's x-max-length, SQS's admission set): lib/src/celery_floodgate/tenants.py.
-- The rule is fairness.py's decide, against the counts of the meter's hash: check, and
-- count the place when admitted, in one step, so concurrent submitters cannot take a
-- tenant past its share between them.
--
-- KEYS: the queue's tenant hash, the queue's line (ticket), the class's line, the tenant's.
-- Hash fields: "t:<tenant>" -> messages reserved and not yet received by a worker;
--   "seq" reservations ever made, "at" the last one's time, "epoch" bumped by each reset
--   (tenants_reconcile.lua), "depth"/"depth_at" the broker's last reading.
-- ARGV: tenant, its weight, places wanted (a batch's messages, in order), bound, class
--   bound, watermark depth, critical (1/0), drain rate (0: unknown), longest Retry-After,
--   one turnover in seconds, pending slots of the queue's, the class's and the tenant's
--   lines, how long a broker reading counts (s), nw, then nw pairs (tenant, weight).
-- Returns {places reserved, reason ('' if none refused), depth, holding, share, seconds to
--   the ticket ('-1': rate unknown, '': none refused), epoch}; depth and holding are after
--   the last place reserved, or at the refusal.
local key, tenant, weight, wanted = KEYS[1], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local bound, cbound, wdepth = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local critical, rate = ARGV[7] == '1', tonumber(ARGV[8])
local weights = {}
for j = 1, tonumber(ARGV[15]) do weights[ARGV[14 + 2 * j]] = tonumber(ARGV[15 + 2 * j]) end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6

-- One pass gives the total, this tenant's holding and the active tenants' weight; the
-- total is not stored apart, so it can never disagree with the counts.
local flat = redis.call('HGETALL', key)
local total, mine, active, seen, seen_at, epoch = 0, 0, 0, 0, 0, 0
for i = 1, #flat, 2 do
  local f, v = flat[i], tonumber(flat[i + 1])
  if string.sub(f, 1, 2) == 't:' then
    if v > 0 then
      local name = string.sub(f, 3)
      total = total + v
      active = active + (weights[name] or 1)
      if name == tenant then mine = v end
    end
  elseif f == 'depth' then seen = v
  elseif f == 'depth_at' then seen_at = v
  elseif f == 'epoch' then epoch = v end
end
if mine == 0 then active = active + weight end
-- Messages the counts miss (sent before fair admission, handed back by a dead worker)
-- still fill the queue: a fresh broker reading above the total is the depth.
local depth = total
if now - seen_at <= tonumber(ARGV[14]) and seen > depth then depth = seen end

-- The active weight changes only with this tenant's own first message, counted above.
local reserved, reason, excess, share = 0, '', 0, 0
while reserved < wanted do
  if depth >= cbound then
    reason = (cbound >= bound) and 'full' or 'class'
    excess = depth - cbound + 1
    break
  end
  if not critical and depth >= wdepth then
    share = math.max(1, math.floor(bound * weight / math.max(weight, active)))
    if mine >= share then reason, excess = 'share', mine - share + 1; break end
  end
  reserved, depth, mine, total = reserved + 1, depth + 1, mine + 1, total + 1
end
if reserved > 0 then
  redis.call('HINCRBY', key, 't:' .. tenant, reserved)
  redis.call('HINCRBY', key, 'seq', reserved)
  redis.call('HSET', key, 'at', tostring(now))
end
if reason == '' then return {reserved, '', depth, mine, share, '', epoch} end
if rate <= 0 then return {reserved, reason, depth, mine, share, '-1', epoch} end
local line, line_rate, pending, horizon
if reason == 'share' then
  -- A queue drains its tenants in proportion to what they hold: this line moves at that pace.
  line_rate = rate * mine / math.max(1, total)
  line, pending, horizon = KEYS[4], tonumber(ARGV[13]), share / line_rate
elseif reason == 'class' then
  line, line_rate, pending, horizon = KEYS[3], rate, tonumber(ARGV[12]), cbound / rate
else
  line, line_rate, pending, horizon = KEYS[2], rate, tonumber(ARGV[11]), tonumber(ARGV[10])
end
local wait = line_ticket(line, excess, line_rate, tonumber(ARGV[9]), horizon, pending)
return {reserved, reason, depth, mine, share, tostring(wait), epoch}
