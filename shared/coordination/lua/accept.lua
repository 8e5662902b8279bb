-- Accept one piece of work for a unit (a customer, or an internal unit).
-- KEYS: 1 seen-key, 2 unit hash, 3 unit events list, 4 arq queue, 5 catalog dirty set,
--       6 parked units sorted set (4-6 are the same for every call: batching.py's fixed_keys)
-- ARGV: 1 job function, 2 job expiry extra ms, 3 job id prefix, 4 max events kept per unit,
--       5 arq job key prefix (1-5 are the same for every call: batching.py's fixed_args),
--       6 event json ('' = none), 7 unit, 8 delay ms, 9 reason, 10 dedupe ttl s ('' = no dedupe),
--       11 catalog item ('' = none), 12 unpark ('1' = yes)
-- Returns: duplicate | coalesced | running | scheduled | parked
if ARGV[10] ~= '' then
  if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', tonumber(ARGV[10])) then
    return 'duplicate'
  end
end
if ARGV[11] ~= '' then
  redis.call('SADD', KEYS[5], ARGV[11])
end
if ARGV[6] ~= '' then
  redis.call('RPUSH', KEYS[3], ARGV[6])
  redis.call('LTRIM', KEYS[3], -tonumber(ARGV[4]), -1)
  redis.call('PEXPIRE', KEYS[3], 2592000000)
end
local cfg = {queue = KEYS[4], func = ARGV[1], expires_extra_ms = tonumber(ARGV[2]), id_prefix = ARGV[3],
             job_prefix = ARGV[5], now = now_ms()}
return mark(cfg, KEYS[2], KEYS[6], ARGV[7], tonumber(ARGV[8]), ARGV[9], ARGV[12] == '1')
