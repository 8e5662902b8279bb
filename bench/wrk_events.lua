-- wrk script of the receiver benchmark (bench/receiver.py): POSTs pre-signed Stripe events.
-- wrk cannot compute HMACs fast enough in Lua, so the events come signed from a file, one
-- "<Stripe-Signature>\t<body>" per line; each thread keeps every n-th line (its own events:
-- no event is sent twice unless the run outlasts the file, which the benchmark reports).
-- Arguments after `--`: <file> <threads>.

local counter = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
end

function init(args)
  local path, nthreads = args[1], tonumber(args[2])
  sigs, bodies, sent = {}, {}, 0
  local i = 0
  for line in io.lines(path) do
    if i % nthreads == id then
      local tab = line:find("\t", 1, true)
      sigs[#sigs + 1] = line:sub(1, tab - 1)
      bodies[#bodies + 1] = line:sub(tab + 1)
    end
    i = i + 1
  end
end

function request()
  sent = sent + 1
  local k = (sent - 1) % #bodies + 1
  return wrk.format("POST", nil, {["Stripe-Signature"] = sigs[k], ["Content-Type"] = "application/json"}, bodies[k])
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "seconds": %.3f, "p50_ms": %.3f, "p99_ms": %.3f, "max_ms": %.3f, ' ..
    '"non2xx": %d, "errors": %d}\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000, e.status, e.connect + e.read + e.write + e.timeout))
end
