-- wrk: POST /api/licenses/validate with a key drawn at random from $KEYS_FILE on every request.
-- The requests are formatted once per thread in init(), so the generator spends its CPU on
-- sending, not on string building.

local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("id", counter)
end

function init(args)
  local path = os.getenv("KEYS_FILE") or error("KEYS_FILE is not set")
  local f = assert(io.open(path, "r"))
  reqs = {}
  local headers = { ["Content-Type"] = "application/json" }
  for key in f:lines() do
    if #key > 0 then
      reqs[#reqs + 1] = wrk.format("POST", "/api/licenses/validate", headers,
        '{"key":"' .. key .. '"}')
    end
  end
  f:close()
  assert(#reqs > 0, "no keys in " .. path)
  math.randomseed(os.time() * 1000 + (id or 0))
end

function request()
  return reqs[math.random(#reqs)]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRK requests=%d duration_us=%d p50_us=%d p99_us=%d mean_us=%.0f max_us=%d non2xx=%d sockerr=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.mean, latency.max, e.status, e.connect + e.read + e.write + e.timeout))
end
