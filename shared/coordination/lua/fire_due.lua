-- Timers, run by every worker every second; atomic, so each fires once whatever the number of workers.
-- 1. Due re-checks (docs/contract.md §5) become work for their customer.
-- 2. Runs whose lease expired (their process died or stalled): the unit is queued again at once,
--    rather than when arq retries the dead job (its job timeout + 10 s later).
-- KEYS: 1 re-checks sorted set, 2 arq queue, 3 live-leases sorted set, 4 parked units sorted set
-- ARGV: 1 unit hash name before the unit, 2 after it (Keys.unit_key_parts), 3 job function,
--       4 delay ms, 5 job expiry extra ms, 6 job id prefix, 7 limit, 8 arq job key prefix
-- Returns {re-checked units..., '|', revived units...}.
local cfg = {queue = KEYS[2], func = ARGV[3], expires_extra_ms = tonumber(ARGV[5]), id_prefix = ARGV[6],
             job_prefix = ARGV[8], now = now_ms()}
local delay = tonumber(ARGV[4])
local limit = tonumber(ARGV[7])
local result = {}
for _, unit in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', cfg.now, 'LIMIT', 0, limit)) do
  redis.call('ZREM', KEYS[1], unit)
  mark(cfg, ARGV[1] .. unit .. ARGV[2], KEYS[4], unit, delay, 'recheck', false)
  table.insert(result, unit)
end
table.insert(result, '|')
for _, unit in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', cfg.now, 'LIMIT', 0, limit)) do
  redis.call('ZREM', KEYS[3], unit)
  local unit_key = ARGV[1] .. unit .. ARGV[2]
  local st = redis.call('HMGET', unit_key, 'run', 'lease', 'pending')
  if st[1] and st[1] ~= '' and tonumber(st[2] or '0') <= cfg.now and not job_alive(cfg, st[3]) then
    schedule(cfg, unit_key, unit, delay)
    table.insert(result, unit)
  end
end
return result
