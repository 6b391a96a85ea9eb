# Sourced by the end-to-end tests: starts the real trellis-scheduler and
# trellis-worker binaries on free 127.0.0.1 ports in a scratch folder, talks
# to the API with curl, checks JSON with python3, and stops everything it
# started when the test exits. Every wait is bounded.
set -euo pipefail

BUILD="${TR_BUILD_DIR:?TR_BUILD_DIR must point at the build folder}"
SRC="${TR_SOURCE_DIR:?TR_SOURCE_DIR must point at the repository}"
SCHED_BIN="$BUILD/scheduler/trellis-scheduler"
WORKER_BIN="$BUILD/worker/trellis-worker"
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
TMP="$(mktemp -d /tmp/trellis-e2e.XXXXXX)"
PIDS=()
HB_MS="${HB_MS:-200}"
# The state backend under test: sqlite (default) or etcd (a member of its own,
# started on free loopback ports in the scratch folder).
STATE_KIND="${TR_E2E_STATE:-sqlite}"
STATE_URL=""
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}"

cleanup() {
  local rc=$?
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for _ in $(seq 1 50); do
    local alive=0
    for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  [ -f "$TMP/etcd/pid" ] && bash "$SRC/tests/etcd/stop-etcd.sh" "$TMP/etcd" >/dev/null 2>&1 || true
  [ -d "$TMP/pg" ] && bash "$SRC/tests/pg/pg_stop.sh" "$TMP/pg" >/dev/null 2>&1 || true
  if [ "$rc" != 0 ]; then
    echo "---- logs of the failed test ($TMP) ----"
    for f in "$TMP"/*.log; do [ -f "$f" ] && { echo "== $f"; tail -n 40 "$f"; }; done
  fi
  [ "${KEEP_TMP:-0}" = 1 ] || rm -rf "$TMP"
  exit "$rc"
}
trap cleanup EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok - $*"; }

free_port() {
  "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_for() { # seconds command...
  local limit="$1"; shift
  local end=$(( $(date +%s) + limit ))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -ge "$end" ] && return 1
    sleep 0.05
  done
}

# Sets STATE_URL once: a SQLite file, or a fresh etcd member (ETCD_EP).
ETCD_PREFIX=/trellis-e2e
start_state() {
  [ -n "$STATE_URL" ] && return 0
  if [ "$STATE_KIND" = etcd ]; then
    bash "$SRC/tests/etcd/start-etcd.sh" "$TMP/etcd" --fresh >/dev/null || fail "etcd did not start"
    ETCD_EP=$(cat "$TMP/etcd/endpoint")
    STATE_URL="etcd://$ETCD_EP?prefix=$ETCD_PREFIX"
  else
    STATE_URL="sqlite:$TMP/state.db"
  fi
}

# start_pg: a PostgreSQL of the test's own (tests/pg/pg_start.sh) in $TMP/pg,
# stopped by the cleanup trap; its URL in PG_URL.
start_pg() {
  bash "$SRC/tests/pg/pg_start.sh" "$TMP/pg" >/dev/null || fail "PostgreSQL did not start"
  PG_URL=$(cat "$TMP/pg/url")
}

# start_scheduler [extra flags]: sets API, API_PORT, WPORT, SCHED_PID
start_scheduler() {
  start_state
  API_PORT="${API_PORT:-$(free_port)}"
  WPORT="${WPORT:-$(free_port)}"
  API="http://127.0.0.1:$API_PORT"
  "$SCHED_BIN" --api "127.0.0.1:$API_PORT" --listen "tcp://127.0.0.1:$WPORT" \
    --state "$STATE_URL" --heartbeat-ms "$HB_MS" "$@" >>"$TMP/scheduler.log" 2>&1 &
  SCHED_PID=$!
  PIDS+=("$SCHED_PID")
  wait_for 20 curl -sf "$API/healthz" || fail "scheduler did not answer /healthz"
}

# start_worker NAME [extra flags]: worker NAME, pid in WPID
start_worker() {
  local name="$1"; shift
  "$WORKER_BIN" --scheduler "tcp://127.0.0.1:$WPORT" --id "w-$name" "$@" \
    >>"$TMP/worker-$name.log" 2>&1 &
  WPID=$!
  PIDS+=("$WPID")
}

# wait_workers N: until /v1/workers lists N workers
wait_workers() {
  wait_for 20 bash -c "[ \"\$(curl -sf $API/v1/workers | $PY -c 'import json,sys; print(len(json.load(sys.stdin)[\"workers\"]))')\" = $1 ]" \
    || fail "expected $1 workers"
}

api_get() { curl -s "$API$1"; }
api_post() { curl -s -X POST -H 'Content-Type: application/json' --data-binary "$2" "$API$1"; }
# status code only
api_status() { curl -s -o /dev/null -w '%{http_code}' "$@"; }

# jq-like: json_get EXPR reads JSON on stdin, prints eval(EXPR) with j bound to it
json_get() {
  "$PY" -c 'import json,sys
j = json.load(sys.stdin)
v = eval(sys.argv[1])
print(json.dumps(v) if not isinstance(v, str) else v)' "$1"
}

# submit FILE [PARAMS_JSON]: prints the run id
submit() {
  local body
  body=$("$PY" -c 'import json,sys
print(json.dumps({"source": open(sys.argv[1]).read(), "name": sys.argv[1].split("/")[-1],
                  "params": json.loads(sys.argv[2])}))' "$1" "${2:-{\}}")
  local out
  out=$(api_post /v1/runs "$body")
  echo "$out" | json_get 'j["run_id"]' 2>/dev/null || fail "submit $1 failed: $out"
}

# register FILE: registers the pipeline (and its triggers) with POST /v1/pipelines
register() {
  local body out
  body=$("$PY" -c 'import json,sys
print(json.dumps({"source": open(sys.argv[1]).read(), "name": sys.argv[1].split("/")[-1]}))' "$1")
  out=$(api_post /v1/pipelines "$body")
  echo "$out" | json_get 'j["version"]' >/dev/null 2>&1 || fail "register $1 failed: $out"
}

# wait_run ID [SECONDS]: prints the run's JSON once it is finished
wait_run() {
  local id="$1" limit="${2:-60}" end out state
  end=$(( $(date +%s) + limit ))
  while :; do
    out=$(api_get "/v1/runs/$id?wait=5")
    state=$(echo "$out" | json_get 'j["state"]')
    case "$state" in succeeded|failed|cancelled) echo "$out"; return 0 ;; esac
    [ "$(date +%s)" -ge "$end" ] && fail "run $id did not finish in ${limit}s (state $state)"
  done
}

assert_eq() { # actual expected what
  [ "$1" = "$2" ] || fail "$3: expected '$2', got '$1'"
  ok "$3"
}

assert_contains() { # haystack needle what
  case "$1" in *"$2"*) ok "$3" ;; *) fail "$3: '$2' not in: $1" ;; esac
}
