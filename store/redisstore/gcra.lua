-- Flux atomic GCRA step (see redisstore.go).
--
-- KEYS[1]  the record: the TAT as decimal Unix nanoseconds
-- ARGV     now, nT = cost * T and bound = tau + T, each as a pair
--          (hi, lo) = (floor(v / 1e9), v mod 1e9): now_hi, now_lo, nT_hi,
--          nT_lo, bound_hi, bound_lo; now_hi empty: use the server clock;
--          nT = 0 peeks. Then the margin added to the TTL, in ms.
--
-- As algorithm.GCRA.Step: next = max(TAT, now) + nT, saturated at the int64
-- maximum (a missing TAT is -inf); admitted iff next <= now + bound, and
-- then next is stored with a TTL of next - now + margin.
--
-- Returns {verdict, tat, now}: verdict 1 admitted (tat: the new TAT),
-- 0 denied (tat: the unchanged TAT), 2 peeked (tat: the stored TAT);
-- tat is "" when the key has no record; now is "" unless the server
-- clock was read.
--
-- Lua numbers are doubles, exact to 2^53 only, so every int64 nanosecond
-- value is handled as a pair (hi, lo) = (floor(v / 1e9), v mod 1e9): both
-- parts are exact and the arithmetic below is exact over the int64 range.

local B = 1000000000

local function parse(s)
  local neg = string.byte(s, 1) == 45 -- '-'
  if neg then s = string.sub(s, 2) end
  local n = #s
  local hi, lo = 0, tonumber(s)
  if n > 9 then
    hi = tonumber(string.sub(s, 1, n - 9))
    lo = tonumber(string.sub(s, n - 8))
  end
  if neg then
    if lo > 0 then return -hi - 1, B - lo end
    return -hi, 0
  end
  return hi, lo
end

local function fmt(hi, lo)
  local sign = ''
  if hi < 0 then
    sign = '-'
    if lo > 0 then hi, lo = -hi - 1, B - lo else hi = -hi end
  end
  if hi == 0 then return sign .. string.format('%d', lo) end
  return sign .. string.format('%d%09d', hi, lo)
end

local nowh, nowl, nows
if ARGV[1] == '' then
  local t = redis.call('TIME')
  nowh, nowl = tonumber(t[1]), tonumber(t[2]) * 1000
  nows = fmt(nowh, nowl)
else
  nowh, nowl, nows = tonumber(ARGV[1]), tonumber(ARGV[2]), ''
end
local nh, nl = tonumber(ARGV[3]), tonumber(ARGV[4])

local cur = redis.call('GET', KEYS[1])
if nh == 0 and nl == 0 then
  return {2, cur or '', nows}
end

local th, tl = nowh, nowl -- base = max(TAT, now)
if cur then
  local ch, cl = parse(cur)
  if ch > nowh or (ch == nowh and cl > nowl) then th, tl = ch, cl end
end
th, tl = th + nh, tl + nl -- next = base + nT
if tl >= B then th, tl = th + 1, tl - B end
if th > 9223372036 or (th == 9223372036 and tl > 854775807) then
  th, tl = 9223372036, 854775807 -- saturate at MaxInt64, as algorithm.GCRA does
end
local dh, dl = nowh + tonumber(ARGV[5]), nowl + tonumber(ARGV[6]) -- now + bound
if dl >= B then dh, dl = dh + 1, dl - B end
if th > dh or (th == dh and tl > dl) then
  return {0, cur or '', nows} -- (a fresh key always admits)
end

local tat = fmt(th, tl)
-- TTL: until the new TAT, rounded up to the ms, plus the margin.
local ms = (th - nowh) * 1000 + math.ceil((tl - nowl) / 1000000) + tonumber(ARGV[7])
if ms < 1 then ms = 1 end
redis.call('SET', KEYS[1], tat, 'PX', ms) -- an integer below 2^53: printed exactly
return {1, tat, nows}
