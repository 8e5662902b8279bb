-- Accept one piece of work for a unit (a customer, or the catalog).
-- KEYS: 1 seen-key, 2 unit hash, 3 unit events list, 4 arq queue, 5 catalog dirty set
-- ARGV: 1 event json ('' = none), 2 unit, 3 job function, 4 delay ms, 5 job expiry extra ms,
--       6 job id prefix, 7 reason, 8 dedupe ttl s ('' = no dedupe), 9 catalog item ('' = none),
--       10 max events kept per unit
-- Returns: duplicate | coalesced | running | scheduled
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
return mark(KEYS[2], KEYS[4], ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5]), now_ms(),
            ARGV[6], ARGV[7])
