-- Shared by the wrk scripts of load.sh (loaded with dofile from the script's own folder): the
-- machine-readable summary line load.sh parses, and the keys file.

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRK requests=%d duration_us=%d p50_us=%d p99_us=%d mean_us=%.0f max_us=%d non2xx=%d sockerr=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.mean, latency.max, e.status, e.connect + e.read + e.write + e.timeout))
end

-- The non-empty lines of $KEYS_FILE.
function read_keys()
  local path = os.getenv("KEYS_FILE") or error("KEYS_FILE is not set")
  local f = assert(io.open(path, "r"))
  local keys = {}
  for key in f:lines() do
    if #key > 0 then keys[#keys + 1] = key end
  end
  f:close()
  assert(#keys > 0, "no keys in " .. path)
  return keys
end

-- Numbers each thread (setup runs in the main state, once per thread).
local counter = 0
function setup(thread)
  counter = counter + 1
  thread:set("id", counter)
end
