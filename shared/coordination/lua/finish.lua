-- A run ends. Release the unit and queue the next run when work arrived meanwhile or this one
-- failed; park the unit after too many failures that retrying cannot mend.
-- KEYS: 1 unit hash, 2 unit events list, 3 arq queue, 4 live-leases sorted set,
--       5 parked units sorted set
-- ARGV: 1 run token, 2 events handled (dropped from the head of the list),
--       3 ok | failed (retryable) | fatal (not retryable), 4 job function, 5 coalesce delay ms,
--       6 retry delay ms, 7 job expiry extra ms, 8 job id prefix, 9 unit, 10 arq job key prefix,
--       11 fatal failures in a row before the unit is parked
-- Returns: lost (another run took the unit over) | done | again | retry | pending | parked
local cfg = {queue = KEYS[3], func = ARGV[4], expires_extra_ms = tonumber(ARGV[7]), id_prefix = ARGV[8],
             job_prefix = ARGV[10], now = now_ms()}
if redis.call('HGET', KEYS[1], 'run') ~= ARGV[1] then
  return 'lost'
end
redis.call('HSET', KEYS[1], 'run', '', 'run_job', '', 'lease', '0')
redis.call('ZREM', KEYS[4], ARGV[9])
local handled = tonumber(ARGV[2])
if handled > 0 then
  redis.call('LTRIM', KEYS[2], handled, -1)
end
local st = redis.call('HMGET', KEYS[1], 'seq', 'started', 'pending')
if ARGV[3] ~= 'ok' then
  redis.call('HINCRBY', KEYS[1], 'fails', 1)
  if ARGV[3] == 'fatal' and redis.call('HINCRBY', KEYS[1], 'fatals', 1) >= tonumber(ARGV[11]) then
    redis.call('HSET', KEYS[1], 'parked', '1')
    redis.call('ZADD', KEYS[5], cfg.now, ARGV[9])
    return 'parked'
  end
  if job_alive(cfg, st[3]) then
    return 'pending'
  end
  schedule(cfg, KEYS[1], ARGV[9], tonumber(ARGV[6]))
  return 'retry'
end
redis.call('HSET', KEYS[1], 'fails', '0', 'fatals', '0')
if tonumber(st[1] or '0') > tonumber(st[2] or '0') then
  if job_alive(cfg, st[3]) then
    return 'pending'
  end
  schedule(cfg, KEYS[1], ARGV[9], tonumber(ARGV[5]))
  return 'again'
end
return 'done'
