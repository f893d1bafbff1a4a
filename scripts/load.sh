#!/usr/bin/env bash
# Load test of ECOSIRE against the ceiling of this machine, every figure next to its target.
#
#   bash scripts/load.sh
#
# Needs wrk (Debian/Ubuntu: apt-get install wrk), python3 and curl; psql and a PostgreSQL at
# $PG_URL for the PostgreSQL activation figure (skipped, and said so, without them). Builds two
# release binaries (CARGO_TARGET_DIR is honoured): the server, and the ceiling — a minimal axum
# JSON endpoint (benches/ceiling.rs) that answers GET /api/health and POST /api/licenses/validate
# with the same bytes as the real server. Then, all on 127.0.0.1:
#
#   1. the server on a fresh SQLite database, access log (RUST_LOG=info, to a file) and metrics
#      on, rate limits off; LICENSES licenses issued in bulk through the store
#      (`ecosire license issue`); ROUNDS rounds, each loading in turn the ceiling's health, the
#      server's health, the ceiling's validate and the server's validate (a random key of the set
#      per request); medians of the rounds;
#   2. the same with rate limits on (limits far above the load, so every request is charged and
#      none refused: what the limiter costs, not what it refuses);
#   3. activation, a new fingerprint per request, on SQLite and on PostgreSQL;
#   4. BIG (1,000,000) licenses issued in bulk (timed), the server restarted with a cold cache,
#      validate with a random key of all of them per request;
#   5. the server restarted again, every one of the BIG licenses validated once: resident memory
#      before and after, per cached license.
#
# Knobs (environment): LICENSES=10000 BIG=1000000 ACT_LICENSES=1000 ROUNDS=3 CONNS=64 DURATION=10
#   WARMUP=3 THREADS=2 PG_URL=postgres://postgres@127.0.0.1:5432/postgres SKIP_PG=0 SKIP_BIG=0
#   BUILD_TIMEOUT=3600 PERF=1 (perf-record the server during each validate and health run of
#   round 1; flat profiles go to <target dir>/load/perf-*.txt).
# Every step has a time bound; the servers are stopped and the PostgreSQL database dropped on
# exit, whatever happens.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LICENSES="${LICENSES:-10000}"
BIG="${BIG:-1000000}"
ACT_LICENSES="${ACT_LICENSES:-1000}"
ROUNDS="${ROUNDS:-3}"
CONNS="${CONNS:-64}"
DURATION="${DURATION:-10}"
WARMUP="${WARMUP:-3}"
THREADS="${THREADS:-2}"
PG_URL="${PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
SKIP_PG="${SKIP_PG:-0}"
SKIP_BIG="${SKIP_BIG:-0}"
BUILD_TIMEOUT="${BUILD_TIMEOUT:-3600}"
PERF="${PERF:-0}"
ADMIN_EMAIL="load-admin@load.local"
ADMIN_PASSWORD="load-admin-password-1"
# Limits far above anything this load reaches: phase 2 pays for every check, refuses nothing.
HIGH_LIMIT="1000000000/min"

log() { printf '[load] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# --- tools -----------------------------------------------------------------------------------
# Checked before the (long) build, so a missing tool costs nothing.
command -v wrk >/dev/null \
    || die "wrk (the load generator) is not installed: apt-get install wrk (Debian/Ubuntu), brew install wrk (macOS), or build it from https://github.com/wg/wrk"
command -v python3 >/dev/null || die "python3 is needed (build output, report)"
command -v curl >/dev/null || die "curl is needed"

# --- scratch space and cleanup --------------------------------------------------------------
TMP="$(mktemp -d -t ecosire-load.XXXXXX)"
PIDS=()
PERF_PID=""
PG_DB=""
cleanup() {
    local rc=$?
    if [ -n "$PERF_PID" ] && kill -0 "$PERF_PID" 2>/dev/null; then
        kill -INT "$PERF_PID" 2>/dev/null || true
    fi
    for pid in "${PIDS[@]}"; do
        stop_pid "$pid"
    done
    if [ -n "$PG_DB" ]; then
        psql "$PG_URL" -qtAc "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" >/dev/null 2>&1 || true
    fi
    if [ "$rc" -ne 0 ]; then
        for f in "$TMP"/*.log; do
            [ -f "$f" ] || continue
            log "$(basename "$f") (last 10 lines):"
            tail -n 10 "$f" >&2 || true
        done
    fi
    rm -rf "$TMP"
    exit "$rc"
}
stop_pid() {
    local pid="$1"
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- build -----------------------------------------------------------------------------------
log "building the release binaries (cargo build --release; up to ${BUILD_TIMEOUT}s)"
# Cargo says where it put the binaries (CARGO_TARGET_DIR, a workspace, a config file may move
# them): the JSON messages go to stdout, the human progress to stderr.
(cd "$ROOT" && timeout "$BUILD_TIMEOUT" cargo build --release --bin ecosire --bench ceiling \
    --message-format=json) >"$TMP/build.json" 2>"$TMP/build.txt" \
    || { tail -n 30 "$TMP/build.txt" >&2; die "release build failed or timed out"; }
executable() {
    python3 - "$TMP/build.json" "$1" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    m = json.loads(line)
    t = m.get("target", {})
    if m.get("reason") == "compiler-artifact" and t.get("name") == sys.argv[2] and m.get("executable"):
        print(m["executable"])
PY
}
BIN="$(executable ecosire)"
CEILING_BIN="$(executable ceiling)"
[ -x "$BIN" ] || die "cargo reported no ecosire executable (see $TMP/build.json)"
[ -x "$CEILING_BIN" ] || die "cargo reported no ceiling executable (see $TMP/build.json)"
TARGET_DIR="$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

wait_health() { # BASE PID NAME
    for _ in $(seq 150); do
        curl -fsS "$1/api/health" >/dev/null 2>&1 && return 0
        kill -0 "$2" 2>/dev/null || die "$3 exited during start"
        sleep 0.2
    done
    die "$3 did not answer $1/api/health within 30 s"
}

# start_server NAME DATABASE_URL [VAR=value ...]: the server on a free port; sets SERVER_PID and
# BASE. The access log is on (RUST_LOG=info) and goes to $TMP/NAME.log with everything else.
SERVER_PID=""
BASE=""
start_server() {
    local name="$1" db="$2"; shift 2
    local port; port="$(free_port)"
    BASE="http://127.0.0.1:$port"
    env ECOSIRE_BIND="127.0.0.1:$port" DATABASE_URL="$db" ECOSIRE_KEYS_DIR="$TMP/keys" \
        ECOSIRE_RATE_LIMITS=off ECOSIRE_COOKIE_SECURE=false \
        ECOSIRE_ADMIN_EMAIL="$ADMIN_EMAIL" ECOSIRE_ADMIN_PASSWORD="$ADMIN_PASSWORD" \
        ECOSIRE_LICENSE_CACHE_CAPACITY=$(((BIG + LICENSES + ACT_LICENSES) * 5 / 4)) \
        RUST_LOG=info "$@" "$BIN" serve >>"$TMP/$name.log" 2>&1 &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    wait_health "$BASE" "$SERVER_PID" "the server ($name)"
}
stop_server() { stop_pid "$SERVER_PID"; SERVER_PID=""; }

admin_token() {
    curl -fsS -X POST "$BASE/api/auth/login" -H 'content-type: application/json' \
        -d "{\"email\":\"$ADMIN_EMAIL\",\"password\":\"$ADMIN_PASSWORD\"}" \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])'
}

# create_product SLUG: a product through the API (perpetual, 3 seats, two entitlements).
create_product() {
    curl -fsS -X POST "$BASE/api/products" -H 'content-type: application/json' \
        -H "authorization: Bearer $(admin_token)" \
        -d "{\"name\":\"Load $1\",\"slug\":\"$1\",\"max_activations\":3,\"entitlements\":[\"pro\",\"export\"]}" \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])' >/dev/null \
        || die "could not create product $1"
}

# issue DATABASE_URL PRODUCT COUNT KEYS_OUT [--max-activations N]: bulk issuing through the
# store; prints the seconds it took.
issue() {
    local db="$1" product="$2" count="$3" out="$4"; shift 4
    local t0 t1
    t0="$(date +%s.%N)"
    env DATABASE_URL="$db" ECOSIRE_KEYS_DIR="$TMP/keys" RUST_LOG=warn \
        timeout 1800 "$BIN" license issue --product "$product" --count "$count" \
        --keys-out "$out" "$@" >>"$TMP/issue.log" 2>&1 || die "ecosire license issue failed"
    t1="$(date +%s.%N)"
    [ "$(wc -l <"$out")" -eq "$count" ] || die "expected $count keys in $out"
    python3 -c "print(f'{$t1 - $t0:.1f}')"
}

# --- measuring -------------------------------------------------------------------------------
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
CLK_TCK="$(getconf CLK_TCK)"
OUT="$TMP/out"
mkdir -p "$OUT"

# perf_start TAG NAME / perf_stop: with PERF=1 and a TAG (round 1 only), a flat profile of the
# server by DSO and symbol. Every branch returns 0: these run under `set -e`.
PERF_NAME=""
perf_start() {
    if [ "$PERF" != "1" ] || [ -z "$1" ] || ! command -v perf >/dev/null; then return 0; fi
    mkdir -p "$TARGET_DIR/load"
    PERF_NAME="$1-$2"
    perf record -F 999 -p "$SERVER_PID" -o "$TMP/perf-$PERF_NAME.data" -- sleep "$DURATION" \
        >/dev/null 2>&1 &
    PERF_PID=$!
}
perf_stop() {
    if [ -z "$PERF_PID" ]; then return 0; fi
    wait "$PERF_PID" 2>/dev/null || true
    PERF_PID=""
    local out="$TARGET_DIR/load/perf-$PERF_NAME.txt" name="$PERF_NAME"
    set -- "$name"
    {
        perf report -i "$TMP/perf-$1.data" --stdio --sort dso 2>/dev/null | grep -v '^#' | grep -v '^$'
        echo
        perf report -i "$TMP/perf-$1.data" --stdio --sort dso,sym --percent-limit 0.05 2>/dev/null \
            | grep -v '^#' | grep -v '^$'
    } >"$out" || true
    log "perf profile: $out"
}

# run NAME PID WRK-ARGS...: wrk for DURATION s; leaves the "WRK …" summary and the CPU ticks of
# process PID in $OUT/NAME.
run() {
    local name="$1" pid="$2"; shift 2
    local t0 t1
    t0="$(cpu_ticks "$pid")"
    timeout $((DURATION + 60)) wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --timeout 5s "$@" \
        >"$OUT/$name" 2>&1 || { cat "$OUT/$name" >&2; die "wrk ($name) failed"; }
    t1="$(cpu_ticks "$pid")"
    echo "CPU_TICKS=$((t1 - t0))" >>"$OUT/$name"
    grep -q '^WRK ' "$OUT/$name" || { cat "$OUT/$name" >&2; die "no wrk summary ($name)"; }
}

warm_up() { # BASE
    timeout $((WARMUP + 60)) wrk -t"$THREADS" -c"$CONNS" -d"${WARMUP}s" \
        -s "$ROOT/scripts/wrk/validate.lua" "$1" >/dev/null 2>&1 || die "wrk warm-up failed"
}

# rounds TAG: ROUNDS rounds of ceiling health, server health, ceiling validate, server validate.
rounds() {
    local tag="$1" r
    for r in $(seq "$ROUNDS"); do
        log "$tag round $r/$ROUNDS: ceiling health, health, ceiling validate, validate (${DURATION}s each)"
        local profile=""
        if [ "$r" = 1 ]; then profile="$tag"; fi
        run "$tag.ceiling-health.$r" "$CEILING_PID" -s "$ROOT/scripts/wrk/get.lua" "$CEILING/api/health"
        perf_start "$profile" health
        run "$tag.health.$r" "$SERVER_PID" -s "$ROOT/scripts/wrk/get.lua" "$BASE/api/health"
        perf_stop
        run "$tag.ceiling-validate.$r" "$CEILING_PID" -s "$ROOT/scripts/wrk/validate.lua" "$CEILING"
        perf_start "$profile" validate
        run "$tag.validate.$r" "$SERVER_PID" -s "$ROOT/scripts/wrk/validate.lua" "$BASE"
        perf_stop
    done
}

# --- 1. rate limits off ----------------------------------------------------------------------
SQLITE_URL="sqlite://$TMP/load.db"
start_server sqlite "$SQLITE_URL"
create_product load
log "issuing $LICENSES licenses in bulk through the store"
SEED_S="$(issue "$SQLITE_URL" load "$LICENSES" "$TMP/keys.txt")"
export KEYS_FILE="$TMP/keys.txt"
# The ceiling answers validate with the bytes of a real answer of this server.
curl -fsS -X POST "$BASE/api/licenses/validate" -H 'content-type: application/json' \
    -d "{\"key\":\"$(head -1 "$KEYS_FILE")\"}" >"$TMP/validate-body.json"
grep -q '"valid":true' "$TMP/validate-body.json" || die "validate did not answer VALID: $(cat "$TMP/validate-body.json")"
CEILING_PORT="$(free_port)"
CEILING="http://127.0.0.1:$CEILING_PORT"
CEILING_VALIDATE_BODY="$TMP/validate-body.json" "$CEILING_BIN" "127.0.0.1:$CEILING_PORT" \
    >"$TMP/ceiling.log" 2>&1 &
CEILING_PID=$!
PIDS+=("$CEILING_PID")
wait_health "$CEILING" "$CEILING_PID" "the ceiling"

log "warm-up: validate for ${WARMUP}s"
warm_up "$BASE"
rounds off

# --- 3a. activation on SQLite ----------------------------------------------------------------
log "activation on SQLite: $ACT_LICENSES licenses, a new fingerprint per request"
issue "$SQLITE_URL" load "$ACT_LICENSES" "$TMP/act-keys.txt" --max-activations 1000000 >/dev/null
KEYS_FILE="$TMP/act-keys.txt" RUN_ID=sqlite run activate-sqlite "$SERVER_PID" \
    -s "$ROOT/scripts/wrk/activate.lua" "$BASE"

# --- 2. rate limits on -----------------------------------------------------------------------
stop_server
start_server sqlite-limits "$SQLITE_URL" ECOSIRE_RATE_LIMITS=on \
    ECOSIRE_RATE_LIMIT_VALIDATE="$HIGH_LIMIT" ECOSIRE_RATE_LIMIT_ANONYMOUS="$HIGH_LIMIT"
warm_up "$BASE"
rounds on
stop_server

# --- 3b. activation on PostgreSQL ------------------------------------------------------------
PG_NOTE=""
if [ "$SKIP_PG" = "1" ]; then
    PG_NOTE="skipped (SKIP_PG=1)"
elif ! command -v psql >/dev/null; then
    PG_NOTE="skipped (no psql)"
elif ! psql "$PG_URL" -qtAc 'select 1' >/dev/null 2>&1; then
    PG_NOTE="skipped (no PostgreSQL at $PG_URL)"
else
    PG_DB="ecosire_load_$$"
    psql "$PG_URL" -qtAc "CREATE DATABASE $PG_DB" >/dev/null
    PG_DB_URL="${PG_URL%/*}/$PG_DB"
    log "activation on PostgreSQL ($PG_DB)"
    start_server postgres "$PG_DB_URL"
    create_product load
    issue "$PG_DB_URL" load "$ACT_LICENSES" "$TMP/pg-act-keys.txt" --max-activations 1000000 >/dev/null
    KEYS_FILE="$TMP/pg-act-keys.txt" RUN_ID=pg run activate-postgres "$SERVER_PID" \
        -s "$ROOT/scripts/wrk/activate.lua" "$BASE"
    stop_server
fi

# --- 4. a million licenses, cold cache -------------------------------------------------------
BIG_SEED_S=""
RSS_BEFORE=""
RSS_AFTER=""
CACHED=""
if [ "$SKIP_BIG" != "1" ]; then
    log "issuing $BIG licenses in bulk through the store"
    BIG_SEED_S="$(issue "$SQLITE_URL" load "$BIG" "$TMP/big-keys.txt")"
    cat "$TMP/keys.txt" "$TMP/big-keys.txt" >"$TMP/all-keys.txt"
    start_server sqlite-cold "$SQLITE_URL"
    log "validate over $((BIG + LICENSES)) licenses from a cold cache (${DURATION}s)"
    KEYS_FILE="$TMP/all-keys.txt" run cold.validate "$SERVER_PID" \
        -s "$ROOT/scripts/wrk/validate.lua" "$BASE"
    stop_server

    # --- 5. memory per cached license ------------------------------------------------------
    start_server sqlite-memory "$SQLITE_URL"
    curl -fsS "$BASE/api/health" >/dev/null
    RSS_BEFORE="$(awk '/^VmRSS:/ {print $2}' "/proc/$SERVER_PID/status")"
    log "validating each of the $BIG licenses once (memory)"
    # wrk's threads stop once their share is answered, but wrk itself sleeps out its duration:
    # it is stopped here once the cache has stopped growing for 3 s.
    KEYS_FILE="$TMP/big-keys.txt" SWEEP_THREADS="$THREADS" \
        wrk -t"$THREADS" -c"$CONNS" -d1800s --timeout 5s \
        -s "$ROOT/scripts/wrk/sweep.lua" "$BASE" >"$OUT/sweep" 2>&1 &
    SWEEP_PID=$!
    PIDS+=("$SWEEP_PID")
    cached_entries() { curl -fsS "$BASE/metrics" | awk '/^ecosire_license_cache_entries / {print $2}'; }
    last="" still=0
    for _ in $(seq 1800); do
        sleep 1
        CACHED="$(cached_entries)"
        if [ "$CACHED" = "$last" ]; then still=$((still + 1)); else still=0; fi
        [ "$still" -ge 3 ] && break
        last="$CACHED"
    done
    stop_pid "$SWEEP_PID"
    RSS_AFTER="$(awk '/^VmRSS:/ {print $2}' "/proc/$SERVER_PID/status")"
    CACHED="$(cached_entries)"
    stop_server
fi

# --- report ----------------------------------------------------------------------------------
COMMIT="$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')"
DIRTY="$(cd "$ROOT" && git status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null | grep -q . && echo '+dirty' || true)"
python3 - "$OUT" "$CLK_TCK" <<PY
import glob, os, re, statistics, sys

out, tck = sys.argv[1], float(sys.argv[2])

def parse(path):
    text = open(path).read()
    w = dict(kv.split("=") for kv in re.search(r"^WRK (.*)$", text, re.M).group(1).split())
    w = {k: float(v) for k, v in w.items()}
    m = re.search(r"^CPU_TICKS=(\d+)", text, re.M)
    w["cpu_us"] = float(m.group(1)) / tck * 1e6 / max(w["requests"], 1) if m else float("nan")
    w["rps"] = w["requests"] / (w["duration_us"] / 1e6)
    return w

def runs(name):
    paths = glob.glob(os.path.join(out, name)) + glob.glob(os.path.join(out, name + ".[0-9]*"))
    return [parse(p) for p in sorted(paths)]

def med(ws, key):
    return statistics.median(w[key] for w in ws)

rows = []
def fig(name, value, target="", ok=None):
    verdict = "" if ok is None else ("met" if ok else "MISSED")
    rows.append((name, value, target, verdict))

def per_run(name, ws):
    for i, w in enumerate(ws, 1):
        print(f"  {name:<28} round {i}: {w['rps']:>9.0f} rps  p50 {w['p50_us']/1000:5.2f} ms  "
              f"p99 {w['p99_us']/1000:5.2f} ms  server CPU {w['cpu_us']:5.1f} us/req  "
              f"non-2xx {int(w['non2xx'])}  socket errors {int(w['sockerr'])}")

print()
print("==== ECOSIRE load test: commit ${COMMIT}${DIRTY}, $(nproc) cores, wrk ${THREADS} threads x ${CONNS} connections on the same cores ====")
print(f"licenses  ${LICENSES} issued through the store in ${SEED_S} s; ${ROUNDS} rounds of ${DURATION} s per figure, medians")
for tag, label in (("off", "rate limits off"), ("on", "rate limits on")):
    cg, ch, cv, sv = (runs(f"{tag}.{n}") for n in ("ceiling-health", "health", "ceiling-validate", "validate"))
    if not sv:
        continue
    print(f"-- {label}")
    for name, ws in (("ceiling GET /api/health", cg), ("server GET /api/health", ch),
                     ("ceiling POST validate", cv), ("server POST validate", sv)):
        per_run(name, ws)
    errors = sum(int(w["non2xx"] + w["sockerr"]) for w in ch + sv)
    h_ratio = med(ch, "rps") / med(cg, "rps")
    v_ratio = med(sv, "rps") / med(cv, "rps")
    v_ratio_get = med(sv, "rps") / med(cg, "rps")
    p99_ratio = med(sv, "p99_us") / med(cv, "p99_us")
    fig(f"[{tag}] ceiling health rps", f"{med(cg, 'rps'):,.0f}")
    fig(f"[{tag}] ceiling validate rps", f"{med(cv, 'rps'):,.0f}")
    fig(f"[{tag}] health rps", f"{med(ch, 'rps'):,.0f}")
    fig(f"[{tag}] validate rps", f"{med(sv, 'rps'):,.0f}")
    fig(f"[{tag}] health / ceiling health", f"{h_ratio:.2f}", ">= 0.90", h_ratio >= 0.9)
    fig(f"[{tag}] validate / ceiling validate", f"{v_ratio:.2f}", ">= 0.80", v_ratio >= 0.8)
    fig(f"[{tag}] validate / ceiling health", f"{v_ratio_get:.2f}", "(for reference)")
    fig(f"[{tag}] validate p99 / ceiling p99", f"{p99_ratio:.2f} ({med(sv, 'p99_us')/1000:.2f} / {med(cv, 'p99_us')/1000:.2f} ms)", "<= 1.5", p99_ratio <= 1.5)
    fig(f"[{tag}] validate / health (kept)", f"{med(sv, 'rps') / med(ch, 'rps'):.2f}")
    fig(f"[{tag}] server CPU validate / health", f"{med(sv, 'cpu_us'):.1f} / {med(ch, 'cpu_us'):.1f} us/req")
    fig(f"[{tag}] errors (non-2xx, socket)", str(errors), "0", errors == 0)

for name, target in (("activate-sqlite", 5000), ("activate-postgres", 2000)):
    ws = runs(name)
    if not ws:
        fig(name.replace("-", " "), "${PG_NOTE}" or "not run", f">= {target:,}/s")
        continue
    w = ws[0]
    per_run(name, ws)
    ok_rps = w["rps"] * (1 - w["non2xx"] / max(w["requests"], 1))
    fig(name.replace("-", " "), f"{ok_rps:,.0f}/s (p99 {w['p99_us']/1000:.1f} ms, non-2xx {int(w['non2xx'])})", f">= {target:,}/s", ok_rps >= target and w["non2xx"] == 0)

cold = runs("cold.validate")
if cold:
    per_run("cold validate", cold)
    cv = runs("off.ceiling-validate")
    r = cold[0]["rps"] / med(cv, "rps")
    fig("${BIG} licenses: bulk issue", "${BIG_SEED_S} s" + f" ({${BIG} / float('${BIG_SEED_S}'):,.0f}/s)")
    fig("${BIG}: cold validate rps", f"{cold[0]['rps']:,.0f} (p99 {cold[0]['p99_us']/1000:.1f} ms)")
    fig("${BIG}: cold validate / ceiling", f"{r:.2f}", ">= 0.30", r >= 0.3 and cold[0]["non2xx"] == 0)
if "${RSS_AFTER}":
    before, after, cached = int("${RSS_BEFORE}"), int("${RSS_AFTER}"), float("${CACHED}" or 0)
    per = (after - before) * 1024 / max(cached, 1)
    fig("cached licenses", f"{cached:,.0f}")
    fig("RSS before / after", f"{before/1024:,.0f} / {after/1024:,.0f} MiB")
    fig("memory per cached license", f"{per:,.0f} B", "<= 1024 B", per <= 1024 and cached >= 0.99 * ${BIG})

print()
width = max(len(r[0]) for r in rows)
print(f"{'figure':<{width}}  {'measured':<40} {'target':<16} verdict")
for name, value, target, verdict in rows:
    print(f"{name:<{width}}  {value:<40} {target:<16} {verdict}")
missed = [r[0] for r in rows if r[3] == "MISSED"]
print(f"verdict: {'every target met' if not missed else 'MISSED: ' + ', '.join(missed)}")
print("=" * 100)
PY
