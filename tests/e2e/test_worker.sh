# test_worker.sh - drives the real trellis-worker against tests/e2e/fake_scheduler
# (a scripted stand-in for the scheduler's worker side) and checks what the
# worker sends back: HELLO, PIPELINE_GET once per digest, RESULTs with
# outputs, errors and tracebacks, timeouts (waiting and CPU-bound), CANCEL,
# log lines, a thousand overlapping sleeps, garbage frames, lost heartbeats,
# BYE, a dead first endpoint, and BYE when the worker stops.
#
# Each scenario runs one fake scheduler (its script waits with bounded
# timeouts) and one worker, then checks the JSON lines the fake printed with
# python3. Every wait is bounded; everything started is stopped on exit.
set -euo pipefail

BUILD="${TR_BUILD_DIR:?TR_BUILD_DIR must point at the build folder}"
FAKE="$BUILD/tests/fake_scheduler"
WORKER="$BUILD/worker/trellis-worker"
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
TMP="$(mktemp -d /tmp/trellis-worker-e2e.XXXXXX)"
PIDS=()
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}"

cleanup() {
  local rc=$?
  for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  if [ "$rc" != 0 ]; then
    echo "---- logs of the failed test ($TMP) ----"
    for f in "$TMP"/*.log; do [ -f "$f" ] && { echo "== $f"; tail -n 30 "$f"; }; done
  fi
  [ "${KEEP_TMP:-0}" = 1 ] || rm -rf "$TMP"
  exit "$rc"
}
trap cleanup EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok - $*"; }

# wait_exit PID SECONDS: waits for PID to end; its exit status, or 124 on timeout.
wait_exit() {
  local pid="$1" end=$(( $(date +%s) + $2 ))
  while kill -0 "$pid" 2>/dev/null; do
    [ "$(date +%s)" -ge "$end" ] && return 124
    sleep 0.05
  done
  local rc=0
  wait "$pid" || rc=$?
  return "$rc"
}

# wait_grep SECONDS PATTERN FILE
wait_grep() {
  local end=$(( $(date +%s) + $1 ))
  until grep -q -- "$2" "$3" 2>/dev/null; do
    [ "$(date +%s)" -ge "$end" ] && return 1
    sleep 0.05
  done
}

# start_fake NAME SCRIPT: sets FAKE_PID and PORT; output in $TMP/NAME.jsonl
start_fake() {
  "$FAKE" "$2" >"$TMP/$1.jsonl" 2>"$TMP/$1-fake.log" &
  FAKE_PID=$!
  PIDS+=("$FAKE_PID")
  wait_grep 10 '"PORT"' "$TMP/$1.jsonl" || fail "$1: fake scheduler did not start"
  PORT="$(sed -n 's/.*"port":\([0-9]*\).*/\1/p' "$TMP/$1.jsonl" | head -n 1)"
}

# start_worker NAME ENDPOINTS [flags]: sets WORKER_PID; log in $TMP/NAME-worker.log
start_worker() {
  local name="$1" eps="$2"
  shift 2
  "$WORKER" --scheduler "$eps" --id "w-$name" --heartbeat-ms 200 "$@" \
    2>"$TMP/$name-worker.log" &
  WORKER_PID=$!
  PIDS+=("$WORKER_PID")
}

# finish NAME: the fake must end well, the worker must stop cleanly on SIGTERM.
finish() {
  local rc=0
  wait_exit "$FAKE_PID" 120 || rc=$?
  [ "$rc" = 0 ] || fail "$1: fake scheduler ended with $rc: $(grep FAIL "$TMP/$1.jsonl" || true)"
  kill -TERM "$WORKER_PID" 2>/dev/null || true
  rc=0
  wait_exit "$WORKER_PID" 20 || rc=$?
  [ "$rc" = 0 ] || fail "$1: worker exited with $rc on SIGTERM"
  if grep -E -q 'AddressSanitizer|LeakSanitizer|runtime error:' "$TMP/$1-worker.log"; then
    fail "$1: sanitizer report in the worker log"
  fi
}

# check NAME PYTHON: runs PYTHON with R (RESULT by id), M (all messages) and LOG (worker log).
check() {
  "$PY" - "$TMP/$1.jsonl" "$TMP/$1-worker.log" <<EOF || fail "$1: check failed"
import json, sys
M = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
R = {}
for m in M:
    if m["type"] == "RESULT":
        assert m["id"] not in R, "two results for id %d" % m["id"]
        R[m["id"]] = m
LOG = open(sys.argv[2]).read()
def kind(t): return [m for m in M if m["type"] == t]
def failed(i, text):
    r = R[i]
    assert not r["ok"], "task %d should fail: %r" % (i, r)
    assert text in r["error"], "task %d error %r lacks %r" % (i, r["error"], text)
$2
EOF
}

[ -x "$FAKE" ] || fail "missing $FAKE"
[ -x "$WORKER" ] || fail "missing $WORKER"

# ---------------------------------------------------------------------------
# Pipelines
# ---------------------------------------------------------------------------
cat >"$TMP/main.lua" <<'EOF'
local trellis = require "trellis"
return trellis.pipeline {
  name = "worker-e2e", version = "1",
  params = { k = 1 },
  tasks = {
    trellis.task { name = "add", run = function(ctx, a, b) return a + b end },
    trellis.task { name = "echo", run = function(ctx, v)
      return { v = v, params = ctx.params, run = ctx.run_id, task = ctx.task,
               index = ctx.index, attempt = ctx.attempt }
    end },
    trellis.task { name = "boom", run = function(ctx) error("kaboom") end },
    trellis.task { name = "boom_table", run = function(ctx) error({ code = 42 }) end },
    trellis.task { name = "boom_tostring", run = function(ctx)
      error(setmetatable({}, { __tostring = function() return "custom failure" end }))
    end },
    trellis.task { name = "nap", run = function(ctx, s) trellis.sleep(s) return s end },
    trellis.task { name = "spin", run = function(ctx)
      while true do pcall(function() while true do end end) end
    end },
    trellis.task { name = "chatty", run = function(ctx)
      ctx.log("first", 1, true, nil)
      ctx.log("second")
      trellis.sleep(0.6)
      ctx.log("third")
      return "said"
    end },
    trellis.task { name = "flood", run = function(ctx)
      for i = 1, 300 do ctx.log("line", i) end
      return 300
    end },
    trellis.task { name = "badout", run = function(ctx) return { f = function() end } end },
    trellis.task { name = "hog", run = function(ctx)
      local t = {}
      for i = 1, 1e9 do t[i] = ("x"):rep(64) .. i end
    end },
    trellis.task { name = "nested_sleep", run = function(ctx)
      coroutine.wrap(function() trellis.sleep(0.1) end)()
    end },
    trellis.task { name = "bare_yield", run = function(ctx) coroutine.yield(1) end },
    trellis.task { name = "now", run = function(ctx) return trellis.now() end },
    trellis.task { name = "sort_sleep", run = function(ctx)
      table.sort({ 3, 1, 2 }, function(a, b) trellis.sleep(0) return a < b end)
    end },
    trellis.task { name = "big", run = function(ctx)
      local s, t = ("x"):rep(1024 * 1024), {}
      for i = 1, 50 do t[i] = s end
      return t
    end },
  },
}
EOF
cat >"$TMP/other.lua" <<'EOF'
local trellis = require "trellis"
return trellis.pipeline { name = "other", version = "2",
  tasks = { trellis.task { name = "hi", run = function(ctx) return "hi" end } } }
EOF
echo '-- a source nobody sends' >"$TMP/claimed.lua"
cat >"$TMP/broken.lua" <<'EOF'
local trellis = require "trellis"
return trellis.pipeline { name = "broken", tasks = { trellis.task { name = "x", run = 
EOF
cat >"$TMP/loadsleep.lua" <<'EOF'
local trellis = require "trellis"
trellis.sleep(1)
return trellis.pipeline { name = "loadsleep", tasks = { trellis.task { name = "x", run = function() end } } }
EOF

# ---------------------------------------------------------------------------
# 1. Tasks: outputs, errors, timeouts, cancel, logs, pipeline loading
# ---------------------------------------------------------------------------
cat >"$TMP/basic.txt" <<EOF
heartbeat 200
pipeline main $TMP/main.lua
pipeline other $TMP/other.lua
pipeline broken $TMP/broken.lua
pipeline loadsleep $TMP/loadsleep.lua
pipeline-lie liar $TMP/claimed.lua $TMP/main.lua
pipeline-unknown ghost
expect HELLO 10
hold-pipelines on
task 1 main add args=[2,3]
task 2 main add args=[10,20]
task 3 main echo args=[{"a":[1,2,{"b":"x"}]}] params={"k":5,"s":"v"} index=3 attempt=2 run=r-42
expect PIPELINE_GET 5
sleep 0.5
release-pipelines
wait-results 10 1 2 3
task 4 main boom
task 5 main boom_table
task 6 main boom_tostring
task 7 main badout
task 8 main nested_sleep
task 9 main bare_yield
task 10 main missing_task
task 11 broken x
task 12 liar hi
task 13 ghost hi
task 14 loadsleep x
task 15 other hi
task 16 main sort_sleep
wait-results 20 4 5 6 7 8 9 10 11 12 13 14 15 16
task 20 main nap args=[10] timeout=0.5
task 21 main nap args=[10]
task 22 main chatty
task 23 main flood
sleep 0.2
cancel 21 run-cancelled
wait-results 20 20 21 22 23
task 30 main spin timeout=0.5
task 31 main add args=[1,1]
wait-results 20 30 31
task 40 main hog
task 41 main add args=[4,4]
task 42 main big
wait-results 60 40 41 42
task 50 main nap args=[10]
task 53 main nap args=[10]
task 51 main add args=[5,5]
task 52 main now
sleep 0.3
cancel 51 not-needed
cancel 50
cancel 53
cancel 999
wait-results 20 50 51 52 53
EOF
start_fake basic "$TMP/basic.txt"
start_worker basic "tcp://127.0.0.1:$PORT" --pool cpu-e2e --slots 2 --label zone=a \
  --label tier=gold --gpus 1 --lua-mem-mb 64
finish basic

check basic '
h = kind("HELLO")[0]
# The routing id names the connection, not the worker: random, never the worker id.
assert h["id"] == "w-basic" and h["ident"] != "w-basic" and len(h["ident"]) == 33, h
assert h["pool"] == "cpu-e2e" and h["slots"] == 2 and h["gpus"] == 1, h
assert h["labels"] == {"zone": "a", "tier": "gold"}, h["labels"]
assert h["cpus"] >= 1 and h["mem_mb"] > 0 and h["version"], h
gets = [m["digest"] for m in kind("PIPELINE_GET")]
assert len(gets) == len(set(gets)), "PIPELINE_GET repeated for a digest: %r" % gets
assert len(gets) == 6, gets
'
ok "HELLO advertises id, pool, slots, gpus, cpus, memory and labels"
ok "PIPELINE_GET is sent once per digest"

check basic '
assert R[1]["ok"] and R[1]["output"] == 5 and R[2]["output"] == 30, (R[1], R[2])
o = R[3]["output"]
assert o == {"v": {"a": [1, 2, {"b": "x"}]}, "params": {"k": 5, "s": "v"}, "run": "r-42",
             "task": "echo", "index": 3, "attempt": 2}, o
assert R[3]["attempt"] == 2 and R[3]["epoch"] == 7, R[3]
for i in (1, 2, 3):
    assert R[i]["started_at"] <= R[i]["finished_at"], R[i]
assert R[15]["ok"] and R[15]["output"] == "hi", R[15]
assert isinstance(R[52]["output"], float) and abs(R[52]["output"] - R[52]["finished_at"]) < 5
'
ok "tasks get ctx and their arguments; outputs come back decoded"

check basic '
failed(4, "main.lua:11: kaboom")
failed(4, "stack traceback:")
failed(5, "table: 0x")
failed(5, "stack traceback:")
failed(6, "custom failure")
failed(7, "cannot encode output of task \x27badout\x27")
failed(7, "function")
failed(8, "trellis.sleep can only be called from a task")
failed(9, "yielded outside of a trellis operation")
failed(10, "has no task \x27missing_task\x27")
failed(11, "cannot load pipeline")
failed(12, "digest")
failed(13, "unknown pipeline digest")
failed(14, "trellis.sleep can only be called from a task")
failed(16, "cannot wait here")
for i in range(4, 15):
    assert not R[i]["timed_out"] and not R[i]["cancelled"], R[i]
'
ok "errors come back with their message and a traceback; load errors fail the tasks"

check basic '
failed(20, "task \x27nap\x27 timed out after 0.5 s")
assert R[20]["timed_out"] and not R[20]["cancelled"], R[20]
assert R[20]["finished_at"] - R[20]["started_at"] < 5, R[20]
failed(21, "was cancelled: run-cancelled")
assert R[21]["cancelled"] and not R[21]["timed_out"], R[21]
failed(30, "task \x27spin\x27 timed out after 0.5 s")
assert R[30]["timed_out"], R[30]
assert R[31]["ok"] and R[31]["output"] == 2, R[31]
failed(40, "ran out of memory")
assert R[41]["ok"] and R[41]["output"] == 8, R[41]
failed(42, "output of task \x27big\x27 is too large")
assert R[50]["cancelled"] and R[51]["cancelled"] and R[53]["cancelled"], (R[50], R[51])
failed(51, "not-needed")
assert R[51]["started_at"] == R[51]["finished_at"], R[51]
assert R[52]["ok"], R[52]
assert 999 not in R
'
ok "timeouts stop waiting and CPU-bound tasks; CANCEL stops running and queued tasks"

check basic '
logs22 = [l for m in kind("LOG") if m["id"] == 22 for l in m["logs"]]
assert logs22 == ["first 1 true nil", "second"], logs22
assert R[22]["logs"] == ["third"] and R[22]["output"] == "said", R[22]
logs23 = [l for m in kind("LOG") if m["id"] == 23 for l in m["logs"]] + R[23]["logs"]
assert "100 log lines dropped" in logs23[0], logs23[:2]
assert logs23[1:] == ["line %d" % i for i in range(101, 301)], logs23[1:4]
for m in kind("LOG"):
    assert len(m["logs"]) <= 64, len(m["logs"])
'
ok "ctx.log lines travel in LOG messages and with the RESULT; overflow is counted"

check basic '
import re
starts = re.findall(r"task start run=\S+ task=\S+ index=\d+ attempt=\d+ id=(\d+)", LOG)
dones = re.findall(r"task done run=\S+ task=\S+ index=\d+ attempt=\d+ id=(\d+) ok=[01] ms=\d+", LOG)
assert len(starts) == len(set(starts)), "a task started twice"
assert sorted(set(dones), key=int) == sorted((str(i) for i in R), key=int), (dones, list(R))
'
ok "the worker logs one start and one done line per task"

# ---------------------------------------------------------------------------
# 2. A thousand sleeping tasks overlap on one worker
# ---------------------------------------------------------------------------
cat >"$TMP/overlap.txt" <<EOF
heartbeat 200
pipeline main $TMP/main.lua
expect HELLO 10
tasks 1 1000 main nap args=[1]
wait-results-range 60 1 1000
EOF
start_fake overlap "$TMP/overlap.txt"
start_worker overlap "tcp://127.0.0.1:$PORT" --slots 1000
finish overlap
check overlap '
assert len(R) == 1000 and all(r["ok"] and r["output"] == 1 for r in R.values())
last_start = max(r["started_at"] for r in R.values())
first_end = min(r["finished_at"] for r in R.values())
assert last_start < first_end, (last_start, first_end)
'
ok "1000 tasks sleeping 1 s all ran at once on one worker"

# ---------------------------------------------------------------------------
# 3. Garbage from the scheduler does not stop the worker
# ---------------------------------------------------------------------------
cat >"$TMP/garbage.txt" <<EOF
heartbeat 200
pipeline main $TMP/main.lua
expect HELLO 10
send-random 1
send-random 100
send-random 70000
send-truncated
task 1 main add args=[20,22]
wait-results 10 1
EOF
start_fake garbage "$TMP/garbage.txt"
start_worker garbage "tcp://127.0.0.1:$PORT"
finish garbage
check garbage '
assert R[1]["ok"] and R[1]["output"] == 42, R[1]
assert 999999 not in R
assert "dropped a frame from the scheduler" in LOG, LOG[-500:]
'
ok "random and truncated frames are dropped; the next TASK is answered"

# ---------------------------------------------------------------------------
# 4. Lost heartbeats: the worker drops its tasks, reconnects and says HELLO
# ---------------------------------------------------------------------------
cat >"$TMP/silent.txt" <<EOF
heartbeat 200
pipeline main $TMP/main.lua
expect HELLO 10
task 1 main nap args=[30]
sleep 0.3
heartbeats off
drain HELLO
expect HELLO 10
heartbeats on
drain HEARTBEAT
expect HEARTBEAT 10
task 2 main add args=[1,2]
wait-results 10 2
EOF
start_fake silent "$TMP/silent.txt"
start_worker silent "tcp://127.0.0.1:$PORT"
finish silent
check silent '
assert 1 not in R, "a task of the lost connection answered: %r" % R.get(1)
assert R[2]["ok"] and R[2]["output"] == 3, R[2]
assert "lost the scheduler" in LOG and "dropped 1 tasks" in LOG, LOG[-800:]
'
ok "a silent scheduler is presumed dead: tasks dropped, new connection, HELLO again"

# ---------------------------------------------------------------------------
# 5. BYE from the scheduler: HELLO again on the same connection
# ---------------------------------------------------------------------------
cat >"$TMP/bye.txt" <<EOF
heartbeat 200
pipeline main $TMP/main.lua
expect HELLO 10
task 1 main nap args=[30]
sleep 0.3
bye unknown-worker
expect HELLO 5
task 2 main add args=[2,2]
wait-results 10 2
EOF
start_fake bye "$TMP/bye.txt"
start_worker bye "tcp://127.0.0.1:$PORT"
finish bye
check bye '
assert 1 not in R and R[2]["output"] == 4, R
assert "scheduler said BYE" in LOG, LOG[-500:]
'
ok "BYE from the scheduler drops the tasks in flight and brings a new HELLO"

# ---------------------------------------------------------------------------
# 6. More pipelines than states kept: the least recently used idle one goes
# ---------------------------------------------------------------------------
{
  echo "heartbeat 200"
  for i in $(seq 1 18); do
    printf 'local trellis = require "trellis"\nreturn trellis.pipeline { name = "p%d", tasks = {\n  trellis.task { name = "n", run = function() return %d end } } }\n' \
      "$i" "$i" >"$TMP/p$i.lua"
    echo "pipeline p$i $TMP/p$i.lua"
  done
  echo "expect HELLO 10"
  for i in $(seq 1 18); do echo "task $i p$i n"; echo "wait-results 10 $i"; done
  echo "task 101 p1 n"
  echo "task 118 p18 n"
  echo "wait-results 10 101 118"
} >"$TMP/lru.txt"
start_fake lru "$TMP/lru.txt"
start_worker lru "tcp://127.0.0.1:$PORT"
finish lru
check lru '
assert all(R[i]["ok"] and R[i]["output"] == i for i in range(1, 19)), R
assert R[101]["output"] == 1 and R[118]["output"] == 18, (R[101], R[118])
gets = [m["digest"] for m in kind("PIPELINE_GET")]
assert len(gets) == 19 and gets[0] == gets[18], gets
assert LOG.count("closing idle pipeline state") >= 2, LOG[-500:]
'
ok "beyond 16 pipeline states the least recently used idle one is closed and fetched again"

# ---------------------------------------------------------------------------
# 7. A dead first endpoint: the worker moves on to the next one
# ---------------------------------------------------------------------------
DEAD_PORT="$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
cat >"$TMP/next.txt" <<EOF
heartbeat 200
pipeline main $TMP/main.lua
expect HELLO 10
task 1 main add args=[3,4]
wait-results 10 1
EOF
start_fake next "$TMP/next.txt"
TRELLIS_POOL=gpu TRELLIS_SLOTS=3 TRELLIS_GPUS=2 TRELLIS_LABEL=a=1,b=2 \
  start_worker next "tcp://127.0.0.1:$DEAD_PORT,tcp://127.0.0.1:$PORT"
finish next
check next '
assert R[1]["output"] == 7, R
h = kind("HELLO")[0]
assert (h["pool"], h["slots"], h["gpus"], h["labels"]) == ("gpu", 3, 2, {"a": "1", "b": "2"}), h
'
ok "with several endpoints the worker moves to the next one when one is dead"
ok "flags also come from TRELLIS_* environment variables"

"$WORKER" --help | grep -q -- "--lua-mem-mb N .*\[TRELLIS_LUA_MEM_MB=1024\]" ||
  fail "--help does not list the flags with their variables and defaults"
rc=0
"$WORKER" --slots zero 2>"$TMP/badflag.log" || rc=$?
[ "$rc" = 2 ] && grep -q "bad value 'zero' for --slots (or TRELLIS_SLOTS)" "$TMP/badflag.log" ||
  fail "bad flag: rc $rc"
rc=0
TRELLIS_SLOTS=12abc "$WORKER" 2>"$TMP/badenv.log" || rc=$?
[ "$rc" = 2 ] && grep -q "bad value '12abc' in TRELLIS_SLOTS (the variable of --slots)" \
  "$TMP/badenv.log" || fail "bad variable: rc $rc"
rc=0
"$WORKER" --slot 3 2>"$TMP/unknown.log" || rc=$?
[ "$rc" = 2 ] && grep -q "did you mean --slots" "$TMP/unknown.log" || fail "unknown flag: rc $rc"
ok "--help lists the flags; a bad value or variable, or an unknown flag, exits 2 with a message"

# ---------------------------------------------------------------------------
# 8. SIGTERM: BYE to the scheduler, clean exit
# ---------------------------------------------------------------------------
cat >"$TMP/stop.txt" <<EOF
heartbeat 200
pipeline main $TMP/main.lua
expect HELLO 10
task 1 main nap args=[30]
expect PIPELINE_GET 5
sleep 0.3
expect BYE 10
EOF
start_fake stop "$TMP/stop.txt"
start_worker stop "tcp://127.0.0.1:$PORT"
wait_grep 10 '"PIPELINE_GET"' "$TMP/stop.jsonl" || fail "stop: no PIPELINE_GET"
sleep 0.5
kill -TERM "$WORKER_PID"
rc=0
wait_exit "$WORKER_PID" 20 || rc=$?
[ "$rc" = 0 ] || fail "stop: worker exited with $rc"
rc=0
wait_exit "$FAKE_PID" 20 || rc=$?
[ "$rc" = 0 ] || fail "stop: no BYE from the stopping worker"
grep -E -q 'AddressSanitizer|LeakSanitizer|runtime error:' "$TMP/stop-worker.log" &&
  fail "stop: sanitizer report"
check stop 'assert kind("BYE")[0]["reason"] == "worker stopping" and 1 not in R'
ok "SIGTERM sends BYE and the worker exits cleanly with a task in flight"
