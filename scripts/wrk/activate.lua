-- wrk: POST /api/licenses/activate with a key drawn at random from $KEYS_FILE and a fingerprint
-- no other request uses (run, thread, counter): every request is a new device, a real write.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "lib.lua")

function init(args)
  keys = read_keys()
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
