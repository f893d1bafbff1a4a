-- wrk: the plain request given on the command line (GET /api/health), with the machine-readable
-- summary line that load.sh parses.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "lib.lua")
