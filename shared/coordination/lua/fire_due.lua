-- Timers, run by every worker every second; atomic, so each fires once whatever the number of workers.
-- 1. Due re-checks (SPEC section 5) become work for their customer.
-- 2. Runs whose lease expired (their process died or stalled): the unit is queued again at once,
--    rather than when arq retries the dead job (its job timeout + 10 s later).
-- KEYS: 1 re-checks sorted set, 2 arq queue, 3 live-leases sorted set
-- ARGV: 1 key prefix, 2 job function, 3 delay ms, 4 job expiry extra ms, 5 job id prefix, 6 limit
-- Returns {re-checked units..., '|', revived units...}.
local now = now_ms()
local limit = tonumber(ARGV[6])
local result = {}
for _, unit in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, limit)) do
  redis.call('ZREM', KEYS[1], unit)
  mark(ARGV[1] .. ':unit:{' .. unit .. '}', KEYS[2], unit, ARGV[2], tonumber(ARGV[3]),
       tonumber(ARGV[4]), now, ARGV[5], 'recheck')
  table.insert(result, unit)
end
table.insert(result, '|')
for _, unit in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, limit)) do
  redis.call('ZREM', KEYS[3], unit)
  local unit_key = ARGV[1] .. ':unit:{' .. unit .. '}'
  local st = redis.call('HMGET', unit_key, 'run', 'lease', 'pending')
  if st[1] and st[1] ~= '' and tonumber(st[2] or '0') <= now and not job_alive(st[3]) then
    schedule(unit_key, KEYS[2], unit, ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), now, ARGV[5])
    table.insert(result, unit)
  end
end
return result
