-- A job starts a run for its unit.
-- KEYS: 1 unit hash, 2 unit events list, 3 live-leases sorted set
-- ARGV: 1 arq job id, 2 run token (unique per execution), 3 lease ms, 4 unit
-- Returns {'busy'} when another live run holds the unit, else
-- {'ok', seq at start, took over a dead run (0/1), consecutive failures, reason, events...}
local now = now_ms()
local st = redis.call('HMGET', KEYS[1], 'run', 'lease', 'pending', 'seq', 'fails', 'reason')
if st[1] and st[1] ~= '' and tonumber(st[2] or '0') > now then
  -- Another run holds the unit. If we were its queued job, give the slot up: the holder's
  -- finish sees that the sequence moved since it started and queues a new run.
  if st[3] == ARGV[1] then
    redis.call('HSET', KEYS[1], 'pending', '')
  end
  return {'busy'}
end
local took_over = '0'
if st[1] and st[1] ~= '' then
  took_over = '1'
end
local seq = st[4] or '0'
redis.call('HSET', KEYS[1], 'run', ARGV[2], 'run_job', ARGV[1], 'lease', now + tonumber(ARGV[3]),
           'started', seq)
if st[3] == ARGV[1] then
  redis.call('HSET', KEYS[1], 'pending', '')
end
redis.call('PEXPIRE', KEYS[1], 2592000000)
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[3]), ARGV[4])
local result = {'ok', seq, took_over, st[5] or '0', st[6] or ''}
for _, e in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
  table.insert(result, e)
end
return result
