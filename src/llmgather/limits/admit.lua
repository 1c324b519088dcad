-- One request's admission to a shared quota: `shared_state.SharedState.admit`, step for step, atomically.
-- KEYS[1]: the quota's hash; KEYS[2]: its members (a sorted set, by when each last asked).
-- ARGV: member, amounts[4], rates[4], ceilings[4], corrections[4], hold_s, max_wait_s, blind (0/1),
--       initial window, member ttl, state ttl, blind poll, endpoint, model, tolerance_s.
-- Returns: admitted (0/1), wait_s, ceilings[4], members, cooling_s, granted, paces[4]; numbers as strings, since
-- Redis would cut a Lua number to an integer, written with all 17 digits: `tostring` keeps 14, 100 us of a Unix
-- time, and would lose every correction smaller than that.
local quota, members = KEYS[1], KEYS[2]
local function exact(x) return string.format('%.17g', x) end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000

local amounts, rates, ceilings, corrections = {}, {}, {}, {}
for k = 1, 4 do
  amounts[k] = tonumber(ARGV[1 + k])
  rates[k] = tonumber(ARGV[5 + k])
  ceilings[k] = tonumber(ARGV[9 + k])
  corrections[k] = tonumber(ARGV[13 + k])
end
local hold_s, max_wait_s, blind = tonumber(ARGV[18]), tonumber(ARGV[19]), ARGV[20] == '1'
local initial_window, member_ttl, state_ttl = tonumber(ARGV[21]), tonumber(ARGV[22]), tonumber(ARGV[23])
local blind_poll = tonumber(ARGV[24])
local tolerance_s = tonumber(ARGV[27]) or 0

local fields = {'tat1', 'tat2', 'tat3', 'tat4', 'ceiling1', 'ceiling2', 'ceiling3', 'ceiling4',
                'pace1', 'pace2', 'pace3', 'pace4', 'cool_until', 'blind_left', 'granted',
                'blind_from', 'blind_used1', 'blind_used2', 'blind_used3', 'blind_used4'}
local stored = redis.call('HMGET', quota, unpack(fields))
local tat, known, paces, blind_used = {}, {}, {}, {}
for k = 1, 4 do
  tat[k] = tonumber(stored[k]) or 0
  known[k] = tonumber(stored[4 + k]) or 0
  paces[k] = tonumber(stored[8 + k]) or 0
  blind_used[k] = tonumber(stored[16 + k]) or 0
end
local blind_from = tonumber(stored[16]) or 0
local cool_until = tonumber(stored[13]) or 0
local blind_left = tonumber(stored[14]) or initial_window
local granted = tonumber(stored[15]) or 0

redis.call('ZADD', members, now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', members, '-inf', now - member_ttl)

for k = 1, 4 do
  if ceilings[k] > 0 then known[k] = ceilings[k] end
  if rates[k] > 0 and corrections[k] ~= 0 then
    tat[k] = math.max(now, tat[k] + corrections[k] / rates[k])
  end
end
if hold_s > 0 then
  cool_until = math.max(cool_until, now + hold_s)
  for k = 1, 4 do tat[k] = math.max(tat[k], cool_until) end
end

local admitted, at = false, math.max(now, cool_until)
if blind then
  local anyone_knows = false
  for k = 1, 4 do if known[k] > 0 then anyone_knows = true end end
  if anyone_knows then
    at = now
  elseif blind_left <= 0 and now - blind_from < 1 then
    at = now + blind_poll
  else
    if blind_left <= 0 or blind_from == 0 then  -- a second after the last allowance, the next
      blind_left, blind_from = initial_window, now
      for k = 1, 4 do blind_used[k] = 0 end
    end
    blind_left = blind_left - 1
    admitted = true
    for k = 1, 4 do blind_used[k] = blind_used[k] + amounts[k] end
  end
else
  for k = 1, 4 do
    if rates[k] > 0 and blind_used[k] > 0 then  -- what went blind still counts at the provider
      tat[k] = math.max(tat[k], blind_from + blind_used[k] / rates[k])
    end
    if rates[k] > 0 and amounts[k] > 0 then
      at = math.max(at, tat[k] - (k == 1 and tolerance_s or 0))  -- the request budget's tolerance only
    end
  end
  if at - now <= max_wait_s then
    admitted = true
    for k = 1, 4 do
      if rates[k] > 0 then
        paces[k] = rates[k]
        if amounts[k] > 0 then tat[k] = math.max(tat[k], at) + amounts[k] / rates[k] end
      end
    end
  end
end
if admitted then granted = granted + 1 end

redis.call('HSET', quota,
  'tat1', exact(tat[1]), 'tat2', exact(tat[2]), 'tat3', exact(tat[3]), 'tat4', exact(tat[4]),
  'ceiling1', exact(known[1]), 'ceiling2', exact(known[2]),
  'ceiling3', exact(known[3]), 'ceiling4', exact(known[4]),
  'pace1', exact(paces[1]), 'pace2', exact(paces[2]), 'pace3', exact(paces[3]), 'pace4', exact(paces[4]),
  'cool_until', exact(cool_until), 'blind_left', exact(blind_left), 'granted', exact(granted),
  'blind_from', exact(blind_from), 'blind_used1', exact(blind_used[1]), 'blind_used2', exact(blind_used[2]),
  'blind_used3', exact(blind_used[3]), 'blind_used4', exact(blind_used[4]),
  'endpoint', ARGV[25], 'model', ARGV[26], 'seen', exact(now))
redis.call('EXPIRE', quota, state_ttl)
redis.call('EXPIRE', members, state_ttl)

return {admitted and 1 or 0, exact(math.max(0, at - now)),
        exact(known[1]), exact(known[2]), exact(known[3]), exact(known[4]),
        redis.call('ZCARD', members), exact(math.max(0, cool_until - now)), granted,
        exact(paces[1]), exact(paces[2]), exact(paces[3]), exact(paces[4])}
