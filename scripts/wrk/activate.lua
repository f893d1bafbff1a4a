-- wrk: POST /api/licenses/activate with a key drawn at random from $KEYS_FILE and a fingerprint
-- no other request uses (thread id + counter): every request is a new device, a real write.

local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("id", counter)
end

function init(args)
  local path = os.getenv("KEYS_FILE") or error("KEYS_FILE is not set")
  local f = assert(io.open(path, "r"))
  keys = {}
  for key in f:lines() do
    if #key > 0 then keys[#keys + 1] = key end
  end
  f:close()
  assert(#keys > 0, "no keys in " .. path)
  headers = { ["Content-Type"] = "application/json" }
  run = os.getenv("RUN_ID") or tostring(os.time())
  n = 0
  math.randomseed(os.time() * 1000 + (id or 0))
end

function request()
  n = n + 1
  local body = string.format('{"key":"%s","fingerprint":"load-%s-%d-%d"}',
    keys[math.random(#keys)], run, id or 0, n)
  return wrk.format("POST", "/api/licenses/activate", headers, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRK requests=%d duration_us=%d p50_us=%d p99_us=%d mean_us=%.0f max_us=%d non2xx=%d sockerr=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.mean, latency.max, e.status, e.connect + e.read + e.write + e.timeout))
end
