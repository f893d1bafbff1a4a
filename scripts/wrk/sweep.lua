-- wrk: POST /api/licenses/validate once for every key of $KEYS_FILE (the threads split the file),
-- then stop: fills the server's cache with every license, for the memory measurement.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "lib.lua")

function init(args)
  local total = tonumber(os.getenv("SWEEP_THREADS") or "1")
  mine = {}
  for i, key in ipairs(read_keys()) do
    if (i - 1) % total == (id - 1) then mine[#mine + 1] = key end
  end
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
