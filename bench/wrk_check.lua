-- wrk script of the API benchmark (bench/api.py): GET /v1/check for random users of a seeded set.
-- Arguments after `--`: <users> <delay ms> (0: as fast as it goes; else each connection waits
-- that long between its requests, which paces the whole run at about connections/delay).

function init(args)
  users = tonumber(args[1])
  pause = tonumber(args[2])
  math.randomseed(os.time() + (id or 0))
end

function request()
  local u = math.random(0, users - 1)
  return wrk.format("GET", "/v1/check?user_id=u_" .. u .. "&feature=pro")
end

function delay()
  return pause
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "seconds": %.3f, "p50_ms": %.3f, "p99_ms": %.3f, "max_ms": %.3f, ' ..
    '"non2xx": %d, "errors": %d}\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000, e.status, e.connect + e.read + e.write + e.timeout))
end
