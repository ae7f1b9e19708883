-- Benchmark baseline, not used by the store: the widely deployed float GCRA
-- script design (rwz/redis-gcra, used by go-redis/redis_rate): seconds as
-- doubles since 2017-01-01, the server clock, GET/SET EX, four results.
redis.replicate_commands()
local key = KEYS[1]
local burst = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local period = tonumber(ARGV[3])
local cost = tonumber(ARGV[4])
local interval = period / rate
local increment = interval * cost
local offset = interval * burst
local t = redis.call('TIME')
local now = (t[1] - 1483228800) + t[2] / 1000000
local tat = tonumber(redis.call('GET', key) or now)
if tat < now then tat = now end
local new_tat = tat + increment
local diff = now - (new_tat - offset)
local remaining = math.floor(diff / interval + 0.5)
if remaining >= 0 then
  redis.call('SET', key, new_tat, 'EX', math.ceil(new_tat - now))
  return {cost, remaining, '-1', tostring(new_tat - now)}
end
return {0, 0, tostring(-diff), tostring(tat - now)}
