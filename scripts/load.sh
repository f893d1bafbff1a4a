#!/usr/bin/env bash
# Load test of the license hot path against a real release server on 127.0.0.1.
#
#   bash scripts/load.sh
#
# Needs wrk (Debian/Ubuntu: apt-get install wrk), python3 and curl. Builds the release binary
# (wherever cargo puts it: CARGO_TARGET_DIR is honoured), starts it on a free loopback port
# with a fresh SQLite database and keys folder (rate limits off), seeds LICENSES licenses
# through the API (scripts/seed.py), then measures with wrk:
#   1. POST /api/licenses/validate, a random key of the set per request (after a warm-up);
#   2. GET /api/health, the floor of the same server and stack;
# and prints rps, p50, p99, server CPU per request, and the validate/health ratio (target:
# ≥ 0.7 with validate p99 ≤ 5 ms). The server is stopped on exit, whatever happens.
#
# Knobs (environment): LICENSES=10000 CONNS=64 DURATION=10 WARMUP=3 THREADS=2
#   SEED_CONCURRENCY=8 BUILD_TIMEOUT=3600 PERF=1 (perf-record the server during each run; flat
#   profiles by DSO and symbol go to <target dir>/load/perf-{validate,health}.txt).
# Every step has a time bound; all traffic stays on 127.0.0.1.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LICENSES="${LICENSES:-10000}"
CONNS="${CONNS:-64}"
DURATION="${DURATION:-10}"
WARMUP="${WARMUP:-3}"
THREADS="${THREADS:-2}"
SEED_CONCURRENCY="${SEED_CONCURRENCY:-8}"
BUILD_TIMEOUT="${BUILD_TIMEOUT:-3600}"
PERF="${PERF:-0}"
ADMIN_EMAIL="load-admin@load.local"
ADMIN_PASSWORD="load-admin-password-1"

log() { printf '[load] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# --- tools -----------------------------------------------------------------------------------
# Checked before the (long) build, so a missing tool costs nothing.
command -v wrk >/dev/null \
    || die "wrk (the load generator) is not installed: apt-get install wrk (Debian/Ubuntu), brew install wrk (macOS), or build it from https://github.com/wg/wrk"
command -v python3 >/dev/null || die "python3 is needed (build output, seeding, report)"
command -v curl >/dev/null || die "curl is needed"

# --- scratch space and cleanup --------------------------------------------------------------
TMP="$(mktemp -d -t ecosire-load.XXXXXX)"
SERVER_PID=""
PERF_PID=""
cleanup() {
    local rc=$?
    if [ -n "$PERF_PID" ] && kill -0 "$PERF_PID" 2>/dev/null; then
        kill -INT "$PERF_PID" 2>/dev/null || true
    fi
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.2; done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    if [ "$rc" -ne 0 ] && [ -f "$TMP/server.log" ]; then
        log "server log (last 20 lines):"
        tail -n 20 "$TMP/server.log" >&2 || true
    fi
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- build -----------------------------------------------------------------------------------
log "building the release binary (cargo build --release; up to ${BUILD_TIMEOUT}s)"
# Cargo says where it put the binary (CARGO_TARGET_DIR, a workspace, a config file may move it):
# the JSON messages go to stdout, the human progress to stderr.
(cd "$ROOT" && timeout "$BUILD_TIMEOUT" cargo build --release --bin ecosire --message-format=json) \
    >"$TMP/build.json" 2>"$TMP/build.log" \
    || { tail -n 30 "$TMP/build.log" >&2; die "release build failed or timed out"; }
BIN="$(python3 -c '
import json, sys
for line in open(sys.argv[1]):
    m = json.loads(line)
    t = m.get("target", {})
    if m.get("reason") == "compiler-artifact" and t.get("name") == "ecosire" \
            and "bin" in t.get("kind", []) and m.get("executable"):
        print(m["executable"])
' "$TMP/build.json")"
[ -n "$BIN" ] && [ -x "$BIN" ] || die "cargo reported no ecosire executable (see $TMP/build.json)"
TARGET_DIR="$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"

# --- server ----------------------------------------------------------------------------------
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
BASE="http://127.0.0.1:$PORT"
log "starting $BIN on $BASE (db and keys in $TMP)"
env ECOSIRE_BIND="127.0.0.1:$PORT" \
    DATABASE_URL="sqlite://$TMP/load.db" \
    ECOSIRE_KEYS_DIR="$TMP/keys" \
    ECOSIRE_RATE_LIMITS=off \
    ECOSIRE_COOKIE_SECURE=false \
    ECOSIRE_ADMIN_EMAIL="$ADMIN_EMAIL" \
    ECOSIRE_ADMIN_PASSWORD="$ADMIN_PASSWORD" \
    RUST_LOG=warn \
    "$BIN" serve >"$TMP/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 150); do
    curl -fsS "$BASE/api/health" >/dev/null 2>&1 && break
    kill -0 "$SERVER_PID" 2>/dev/null || die "the server exited during start"
    sleep 0.2
done
curl -fsS "$BASE/api/health" >/dev/null || die "the server did not answer /api/health within 30 s"

# --- seed ------------------------------------------------------------------------------------
log "seeding $LICENSES licenses through the API ($SEED_CONCURRENCY client threads)"
KEYS_FILE="$TMP/keys.txt"
timeout 900 python3 "$ROOT/scripts/seed.py" --base "$BASE" --email "$ADMIN_EMAIL" \
    --password "$ADMIN_PASSWORD" --count "$LICENSES" --keys-out "$KEYS_FILE" \
    --concurrency "$SEED_CONCURRENCY" | tee "$TMP/seed.out" >&2
SEED_S="$(sed -n 's/^SEED_SECONDS=//p' "$TMP/seed.out")"
[ "$(wc -l <"$KEYS_FILE")" -eq "$LICENSES" ] || die "expected $LICENSES keys in $KEYS_FILE"
export KEYS_FILE

# --- measure ---------------------------------------------------------------------------------
cpu_ticks() { awk '{print $14 + $15}' "/proc/$SERVER_PID/stat"; }
CLK_TCK="$(getconf CLK_TCK)"

# run NAME WRK-ARGS... : runs wrk for DURATION s, leaves "WRK …" plus "CPU_TICKS=n" in $TMP/NAME.out
run() {
    local name="$1"; shift
    local t0 t1
    t0="$(cpu_ticks)"
    timeout $((DURATION + 30)) wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --timeout 5s "$@" \
        >"$TMP/$name.out" 2>&1 || { cat "$TMP/$name.out" >&2; die "wrk ($name) failed"; }
    t1="$(cpu_ticks)"
    echo "CPU_TICKS=$((t1 - t0))" >>"$TMP/$name.out"
    grep -q '^WRK ' "$TMP/$name.out" || { cat "$TMP/$name.out" >&2; die "no wrk summary ($name)"; }
}

log "warm-up: validate for ${WARMUP}s"
timeout $((WARMUP + 30)) wrk -t"$THREADS" -c"$CONNS" -d"${WARMUP}s" \
    -s "$ROOT/scripts/wrk/validate.lua" "$BASE" >/dev/null 2>&1 || die "wrk warm-up failed"

# perf_start NAME / perf_stop NAME: with PERF=1, a flat profile of the server during one run
# (no call graphs: the release binary has no frame pointers), by DSO and by symbol.
perf_start() {
    [ "$PERF" = "1" ] && command -v perf >/dev/null || return 0
    mkdir -p "$TARGET_DIR/load"
    perf record -F 999 -p "$SERVER_PID" -o "$TMP/perf-$1.data" -- sleep "$DURATION" \
        >/dev/null 2>&1 &
    PERF_PID=$!
}
perf_stop() {
    [ -n "$PERF_PID" ] || return 0
    wait "$PERF_PID" 2>/dev/null || true
    PERF_PID=""
    local out="$TARGET_DIR/load/perf-$1.txt"
    {
        perf report -i "$TMP/perf-$1.data" --stdio --sort dso 2>/dev/null | grep -v '^#' | grep -v '^$'
        echo
        perf report -i "$TMP/perf-$1.data" --stdio --sort dso,sym --percent-limit 0.05 2>/dev/null \
            | grep -v '^#' | grep -v '^$'
    } >"$out" || true
    log "perf profile of the server: $out"
}

log "validate: ${CONNS} connections, ${THREADS} threads, ${DURATION}s, random key of $LICENSES"
perf_start validate
run validate -s "$ROOT/scripts/wrk/validate.lua" "$BASE"
perf_stop validate

log "health: ${CONNS} connections, ${THREADS} threads, ${DURATION}s"
perf_start health
run health -s "$ROOT/scripts/wrk/get.lua" "$BASE/api/health"
perf_stop health

# --- report ----------------------------------------------------------------------------------
COMMIT="$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')"
DIRTY="$(cd "$ROOT" && git status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null | grep -q . && echo '+dirty' || true)"
python3 - "$TMP/validate.out" "$TMP/health.out" "$CLK_TCK" "$SEED_S" "$LICENSES" <<PY
import sys, re

def parse(path):
    text = open(path).read()
    w = dict(kv.split("=") for kv in re.search(r"^WRK (.*)$", text, re.M).group(1).split())
    w = {k: float(v) for k, v in w.items()}
    w["cpu_ticks"] = float(re.search(r"^CPU_TICKS=(\d+)", text, re.M).group(1))
    w["rps"] = w["requests"] / (w["duration_us"] / 1e6)
    return w

v, h = parse(sys.argv[1]), parse(sys.argv[2])
tck, seed_s, n = float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])

def line(name, w):
    cpu_us = w["cpu_ticks"] / tck * 1e6 / max(w["requests"], 1)
    return (f"{name:<9} {w['rps']:>9.0f} rps   p50 {w['p50_us']/1000:6.2f} ms   "
            f"p99 {w['p99_us']/1000:6.2f} ms   max {w['max_us']/1000:7.2f} ms   "
            f"server CPU {cpu_us:5.1f} us/req   non-2xx {int(w['non2xx'])}   "
            f"socket errors {int(w['sockerr'])}")

ratio = v["rps"] / h["rps"]
p99_ok = v["p99_us"] <= 5000
met = ratio >= 0.7 and p99_ok and v["non2xx"] == 0
print()
print("==== ECOSIRE load test: commit ${COMMIT}${DIRTY}, $(nproc) cores, SQLite, rate limits off ====")
print(f"seeding   {n} licenses via POST /api/licenses in {seed_s:.1f} s ({n/seed_s:.0f}/s, ${SEED_CONCURRENCY} client threads)")
print(f"wrk       {int(${THREADS})} threads, ${CONNS} connections, ${DURATION} s each, on the same 2 cores as the server")
print(line("validate", v))
print(line("health", h))
print(f"ratio     validate/health rps = {ratio:.2f} (target >= 0.70: {'met' if ratio >= 0.7 else 'MISSED'}); "
      f"validate p99 {v['p99_us']/1000:.2f} ms (target <= 5 ms: {'met' if p99_ok else 'MISSED'})")
print(f"verdict   {'TARGET MET' if met else 'TARGET MISSED'}")
print("=" * 72)
PY
