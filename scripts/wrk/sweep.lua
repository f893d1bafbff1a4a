-- wrk: POST /api/licenses/validate once for every key of $KEYS_FILE (the threads split the file),
-- then stop: fills the server's cache with every license, for the memory measurement.

local counter = 0
local threads = {}

function setup(thread)
  counter = counter + 1
  thread:set("id", counter)
  table.insert(threads, thread)
end

function init(args)
  local total = tonumber(os.getenv("SWEEP_THREADS") or "1")
  local path = os.getenv("KEYS_FILE") or error("KEYS_FILE is not set")
  local f = assert(io.open(path, "r"))
  mine = {}
  local i = 0
  for key in f:lines() do
    if #key > 0 then
      if i % total == (id - 1) then mine[#mine + 1] = key end
      i = i + 1
    end
  end
  f:close()
  headers = { ["Content-Type"] = "application/json" }
  next_key = 0
  answered = 0
end

function request()
  next_key = next_key + 1
  local key = mine[math.min(next_key, #mine)]
  return wrk.format("POST", "/api/licenses/validate", headers, '{"key":"' .. key .. '"}')
end

function response(status, headers, body)
  answered = answered + 1
  if answered >= #mine then wrk.thread:stop() end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRK requests=%d duration_us=%d p50_us=%d p99_us=%d mean_us=%.0f max_us=%d non2xx=%d sockerr=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.mean, latency.max, e.status, e.connect + e.read + e.write + e.timeout))
end
