# Sourced by end-to-end tests that drive the real binaries: a scratch folder,
# free loopback ports, bounded waits, assertions, and a cleanup trap that
# stops every process the test started (by pid, and any stray child whose
# command line names the scratch folder), then shows the logs if the test
# failed. Every wait here is bounded.
set -euo pipefail

BUILD="${TR_BUILD_DIR:?TR_BUILD_DIR must point at the build folder}"
SRC="${TR_SOURCE_DIR:?TR_SOURCE_DIR must point at the repository}"
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
TMP="$(mktemp -d /tmp/trellis-e2e.XXXXXX)"
STARTED_PIDS=()
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}"

fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok - $*"; }

# procs_with TEXT: pids of processes whose command line contains TEXT (this
# shell and the scanner excluded).
procs_with() {
  "$PY" - "$1" "$$" <<'PYEOF'
import os, sys
text, shell, me = sys.argv[1].encode(), sys.argv[2], str(os.getpid())
for pid in os.listdir("/proc"):
    if not pid.isdigit() or pid in (shell, me):
        continue
    try:
        with open("/proc/%s/cmdline" % pid, "rb") as f:
            if text in f.read():
                print(pid)
    except OSError:
        pass
PYEOF
}

# stop_pids SECONDS PID...: SIGTERM, wait up to SECONDS, then SIGKILL.
stop_pids() {
  local limit="$1"; shift
  [ "$#" -gt 0 ] || return 0
  local p alive i
  for p in "$@"; do kill -TERM "$p" 2>/dev/null || true; done
  for i in $(seq 1 $((limit * 10))); do
    alive=0
    for p in "$@"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && return 0
    sleep 0.1
  done
  for p in "$@"; do kill -KILL "$p" 2>/dev/null || true; done
}

cleanup() {
  local rc=$?
  set +e
  stop_pids 8 "${STARTED_PIDS[@]}"
  # Whatever still names our scratch folder was started by this test.
  local stray
  stray=$(procs_with "$TMP")
  if [ -n "$stray" ]; then
    # shellcheck disable=SC2086
    stop_pids 3 $stray
  fi
  if [ "$rc" != 0 ]; then
    echo "---- logs of the failed test ($TMP) ----"
    local f
    for f in $(find "$TMP" -name '*.log' -o -name '*.err' -o -name '*.out' | sort); do
      echo "== $f"; tail -n 40 "$f"
    done
  fi
  [ "${KEEP_TMP:-0}" = 1 ] || rm -rf "$TMP"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# free_port: a TCP port on 127.0.0.1 that is free right now.
free_port() {
  "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_for SECONDS COMMAND...: until COMMAND succeeds; 1 when time runs out.
wait_for() {
  local limit="$1"; shift
  local end=$(( $(date +%s) + limit ))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -ge "$end" ] && return 1
    sleep 0.1
  done
}

# wait_for_url URL [SECONDS]: until URL answers 2xx.
wait_for_url() {
  wait_for "${2:-20}" curl -sf --max-time 2 "$1"
}

# wait_for_text FILE TEXT [SECONDS]: until FILE contains TEXT.
wait_for_text() {
  wait_for "${3:-20}" grep -qF -- "$2" "$1"
}

# start_bg LOG COMMAND...: runs COMMAND in the background with its output in LOG;
# its pid is in BG_PID and is stopped by the cleanup trap.
start_bg() {
  local log="$1"; shift
  "$@" >"$log" 2>&1 &
  BG_PID=$!
  STARTED_PIDS+=("$BG_PID")
}

# wait_exit PID SECONDS: waits for a background child to end and sets EXIT_CODE;
# fails the test when it is still running after SECONDS.
wait_exit() {
  local pid="$1" limit="$2" i
  for i in $(seq 1 $((limit * 10))); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -0 "$pid" 2>/dev/null && fail "process $pid still running after ${limit}s"
  EXIT_CODE=0
  wait "$pid" || EXIT_CODE=$?
}

# json_get EXPR: reads JSON on stdin, prints eval(EXPR) with j bound to it.
json_get() {
  "$PY" -c 'import json,sys
j = json.load(sys.stdin)
v = eval(sys.argv[1])
print(json.dumps(v, sort_keys=True) if not isinstance(v, str) else v)' "$1"
}

assert_eq() { # actual expected what
  [ "$1" = "$2" ] || fail "$3: expected '$2', got '$1'"
  ok "$3"
}

assert_contains() { # haystack needle what
  case "$1" in *"$2"*) ok "$3" ;; *) fail "$3: '$2' not in: $1" ;; esac
}

assert_not_contains() { # haystack needle what
  case "$1" in *"$2"*) fail "$3: '$2' unexpectedly in: $1" ;; *) ok "$3" ;; esac
}
