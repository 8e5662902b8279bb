-- A run ends. Release the unit and queue the next run when work arrived meanwhile or this one failed.
-- KEYS: 1 unit hash, 2 unit events list, 3 arq queue, 4 live-leases sorted set
-- ARGV: 1 run token, 2 events handled (dropped from the head of the list), 3 ok|failed,
--       4 job function, 5 coalesce delay ms, 6 retry delay ms, 7 job expiry extra ms,
--       8 job id prefix, 9 unit
-- Returns: lost (another run took the unit over) | done | again | retry | pending
local now = now_ms()
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
if ARGV[3] == 'failed' then
  redis.call('HINCRBY', KEYS[1], 'fails', 1)
  if job_alive(st[3]) then
    return 'pending'
  end
  schedule(KEYS[1], KEYS[3], ARGV[9], ARGV[4], tonumber(ARGV[6]), tonumber(ARGV[7]), now, ARGV[8])
  return 'retry'
end
redis.call('HSET', KEYS[1], 'fails', '0')
if tonumber(st[1] or '0') > tonumber(st[2] or '0') then
  if job_alive(st[3]) then
    return 'pending'
  end
  schedule(KEYS[1], KEYS[3], ARGV[9], ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[7]), now, ARGV[8])
  return 'again'
end
return 'done'
