-- Extend the lease of a run that still holds its unit.
-- KEYS: 1 unit hash, 2 live-leases sorted set. ARGV: 1 run token, 2 lease ms, 3 unit.
-- Returns 1 if the run still holds the unit, else 0.
if redis.call('HGET', KEYS[1], 'run') ~= ARGV[1] then
  return 0
end
local lease = now_ms() + tonumber(ARGV[2])
redis.call('HSET', KEYS[1], 'lease', lease)
redis.call('ZADD', KEYS[2], lease, ARGV[3])
return 1
