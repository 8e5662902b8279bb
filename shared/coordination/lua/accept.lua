-- Accept one piece of work for a unit (a customer, or an internal unit).
-- KEYS: 1 seen-key, 2 unit hash, 3 unit events list, 4 arq queue, 5 catalog dirty set,
--       6 parked units sorted set
-- ARGV: 1 event json ('' = none), 2 unit, 3 job function, 4 delay ms, 5 job expiry extra ms,
--       6 job id prefix, 7 reason, 8 dedupe ttl s ('' = no dedupe), 9 catalog item ('' = none),
--       10 max events kept per unit, 11 arq job key prefix, 12 unpark ('1' = yes)
-- Returns: duplicate | coalesced | running | scheduled | parked
if ARGV[8] ~= '' then
  if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', tonumber(ARGV[8])) then
    return 'duplicate'
  end
end
if ARGV[9] ~= '' then
  redis.call('SADD', KEYS[5], ARGV[9])
end
if ARGV[1] ~= '' then
  redis.call('RPUSH', KEYS[3], ARGV[1])
  redis.call('LTRIM', KEYS[3], -tonumber(ARGV[10]), -1)
  redis.call('PEXPIRE', KEYS[3], 2592000000)
end
local cfg = {queue = KEYS[4], func = ARGV[3], expires_extra_ms = tonumber(ARGV[5]), id_prefix = ARGV[6],
             job_prefix = ARGV[11], now = now_ms()}
return mark(cfg, KEYS[2], KEYS[6], ARGV[2], tonumber(ARGV[4]), ARGV[7], ARGV[12] == '1')
