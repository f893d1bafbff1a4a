-- wrk: POST /api/licenses/validate with a key drawn at random from $KEYS_FILE on every request.
-- The requests are formatted once per thread in init(), so the generator spends its CPU on
-- sending, not on string building.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "lib.lua")

function init(args)
  local headers = { ["Content-Type"] = "application/json" }
  reqs = {}
  for _, key in ipairs(read_keys()) do
    reqs[#reqs + 1] = wrk.format("POST", "/api/licenses/validate", headers, '{"key":"' .. key .. '"}')
  end
  math.randomseed(os.time() * 1000 + (id or 0))
end

function request()
  return reqs[math.random(#reqs)]
end
