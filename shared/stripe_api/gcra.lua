-- Generic cell rate algorithm over two buckets at once, the deployment's overall Stripe budget
-- and the budget of one endpoint, with reservations: a request takes the next free slot of
-- both buckets now and sleeps until it, instead of polling. Slots follow one another exactly
-- one interval apart, so a backlog uses the whole budget (a poller that wakes late loses the
-- slot's head start), first come first served, with one round trip per request.
-- A slot is reserved only when the overall budget is the constraint. When the endpoint's own
-- budget is (its next slot is later than the overall one), nothing is reserved: an overall
-- slot held for a busy endpoint would hold back every other endpoint. The caller asks again
-- when the endpoint frees up.
-- The clock is Redis' own TIME: every worker on every host shares it.
-- KEYS: 1 overall bucket, 2 endpoint bucket
-- ARGV: 1 overall interval us, 2 endpoint interval us, 3 longest wait the caller accepts us
-- (Numbers are written with %d: Lua would print a microsecond clock in exponent form.)
-- Returns {wait us, reserved}: reserved = 1: the request owns the slot `wait` from now and goes
-- then without asking again; 0: nothing was taken, ask again after `wait` (or give up).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat_all = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), now)
local tat_endpoint = math.max(tonumber(redis.call('GET', KEYS[2]) or '0'), now)
if tat_endpoint > tat_all then
  return {tat_endpoint - now, 0}
end
if tat_all - now > tonumber(ARGV[3]) then
  return {tat_all - now, 0}
end
local next_all = tat_all + tonumber(ARGV[1])
local next_endpoint = tat_all + tonumber(ARGV[2])
redis.call('SET', KEYS[1], string.format('%d', next_all), 'PX', string.format('%d', math.floor((next_all - now) / 1000) + 1000))
redis.call('SET', KEYS[2], string.format('%d', next_endpoint), 'PX', string.format('%d', math.floor((next_endpoint - now) / 1000) + 1000))
return {tat_all - now, 1}
