-- Shared by every coordination script (prepended by shared/coordination.py).
-- Redis runs each script atomically, so these steps never interleave with one another.

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- True when job_id names an arq job that still exists (queued, or picked and not yet done).
local function job_alive(job_id)
  return job_id and job_id ~= '' and redis.call('EXISTS', 'arq:job:' .. job_id) == 1
end

-- Queue a fresh arq job (a new id every time: arq refuses a job id it still knows) that will
-- sync `unit` after delay_ms. The job is written in arq's own JSON job format.
local function schedule(unit_key, queue, unit, func, delay_ms, expires_extra_ms, now, id_prefix)
  local n = redis.call('HINCRBY', unit_key, 'jobs', 1)
  local job_id = id_prefix .. unit .. ':' .. now .. ':' .. n
  local job = cjson.encode({t = cjson.null, f = func, a = {unit}, k = {}, et = now})
  redis.call('SET', 'arq:job:' .. job_id, job, 'PX', delay_ms + expires_extra_ms)
  redis.call('ZADD', queue, now + delay_ms, job_id)
  redis.call('HSET', unit_key, 'pending', job_id)
  return job_id
end

-- New work for `unit`: bump its sequence number, then queue a job unless one is already
-- queued (it will see this work: coalescing) or a live run holds the unit (its finish sees
-- the bumped sequence and queues the next run).
local function mark(unit_key, queue, unit, func, delay_ms, expires_extra_ms, now, id_prefix, reason)
  redis.call('HINCRBY', unit_key, 'seq', 1)
  if reason ~= '' then
    redis.call('HSET', unit_key, 'reason', reason)
  end
  redis.call('PEXPIRE', unit_key, 2592000000)
  local st = redis.call('HMGET', unit_key, 'pending', 'run', 'lease')
  if job_alive(st[1]) then
    return 'coalesced'
  end
  if st[2] and st[2] ~= '' and tonumber(st[3] or '0') > now then
    return 'running'
  end
  schedule(unit_key, queue, unit, func, delay_ms, expires_extra_ms, now, id_prefix)
  return 'scheduled'
end
