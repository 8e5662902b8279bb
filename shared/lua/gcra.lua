-- Generic cell rate algorithm over two buckets at once: the deployment's overall Stripe budget
-- and the budget of one endpoint. A request goes only when both allow it; nothing is reserved
-- while it waits, so a backlog on one endpoint never holds back the others.
-- The clock is Redis' own TIME: every worker on every host shares it.
-- KEYS: 1 overall bucket, 2 endpoint bucket
-- ARGV: 1 overall interval us, 2 overall burst tolerance us, 3 endpoint interval us,
--       4 endpoint burst tolerance us
-- (Numbers are written with %d: Lua would print a microsecond clock in exponent form.)
-- Returns 0 when the request may go now, else how many microseconds to wait before asking again.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local wait = 0
local tats = {}
for i = 1, 2 do
  local interval = tonumber(ARGV[2 * i - 1])
  local tolerance = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  if tat < now then
    tat = now
  end
  local over = tat - tolerance - now
  if over > wait then
    wait = over
  end
  tats[i] = tat + interval
end
if wait > 0 then
  return wait
end
for i = 1, 2 do
  redis.call('SET', KEYS[i], string.format('%d', tats[i]), 'PX', string.format('%d', math.floor((tats[i] - now) / 1000) + 1000))
end
return 0
