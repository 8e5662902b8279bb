-- Shared by every coordination script (prepended by coordinator.py).
-- Redis runs each script atomically, so these steps never interleave with one another.
-- No key name is spelled here: each script gets its keys in KEYS, and the prefixes of names it
-- derives (arq's job keys, unit hashes) in ARGV, all from shared/coordination/keys.py.
--
-- cfg, built by each script from its ARGV: queue (arq's queue key), job_prefix (arq's job key
-- prefix), func (the job function), expires_extra_ms, id_prefix (our job ids' prefix), now (ms).

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- True when job_id names an arq job that still exists (queued, or picked and not yet done).
local function job_alive(cfg, job_id)
  return job_id and job_id ~= '' and redis.call('EXISTS', cfg.job_prefix .. job_id) == 1
end

-- Queue a fresh arq job (a new id every time: arq refuses a job id it still knows) that will
-- sync `unit` after delay_ms. The job is written in arq's own JSON job format.
local function schedule(cfg, unit_key, unit, delay_ms)
  local n = redis.call('HINCRBY', unit_key, 'jobs', 1)
  local job_id = cfg.id_prefix .. unit .. ':' .. cfg.now .. ':' .. n
  local job = cjson.encode({t = cjson.null, f = cfg.func, a = {unit}, k = {}, et = cfg.now})
  redis.call('SET', cfg.job_prefix .. job_id, job, 'PX', delay_ms + cfg.expires_extra_ms)
  redis.call('ZADD', cfg.queue, cfg.now + delay_ms, job_id)
  redis.call('HSET', unit_key, 'pending', job_id)
  return job_id
end

-- New work for `unit`: bump its sequence number, then queue a job unless one is already
-- queued (it will see this work: coalescing), a live run holds the unit (its finish sees the
-- bumped sequence and queues the next run), or the unit is parked (its work waits for a
-- replay, which passes unpark = true).
local function mark(cfg, unit_key, parked_key, unit, delay_ms, reason, unpark)
  redis.call('HINCRBY', unit_key, 'seq', 1)
  if reason ~= '' then
    redis.call('HSET', unit_key, 'reason', reason)
  end
  redis.call('PEXPIRE', unit_key, 2592000000)
  if unpark then
    redis.call('HSET', unit_key, 'parked', '', 'fatals', '0', 'fails', '0')
    redis.call('ZREM', parked_key, unit)
  end
  local st = redis.call('HMGET', unit_key, 'pending', 'run', 'lease', 'parked')
  if st[4] == '1' then
    return 'parked'
  end
  if job_alive(cfg, st[1]) then
    return 'coalesced'
  end
  if st[2] and st[2] ~= '' and tonumber(st[3] or '0') > cfg.now then
    return 'running'
  end
  schedule(cfg, unit_key, unit, delay_ms)
  return 'scheduled'
end
