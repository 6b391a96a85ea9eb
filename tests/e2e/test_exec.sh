#!/usr/bin/env bash
# trellis.exec: status and outputs, stdin/env/cwd, CUDA_VISIBLE_DEVICES from
# the task's devices, bounded outputs, lines streamed into the task log, a
# timeout and a cancel that end the whole process group (a grandchild too,
# TERM then KILL), a program that cannot start, no zombie left; and 100
# processes at once that do not stall the worker's loop (figure printed).
source "$(dirname "$0")/cluster.sh"
P="$SRC/tests/e2e/pipelines"
start_scheduler
start_worker cpu --pool cpu --slots 128
CPU_PID=$WPID
start_worker gpu --pool gpu --gpus 2 --slots 2
wait_workers 2
D="$TMP/scratch"
mkdir -p "$D"
run_case() { # case -> run JSON
  local id
  id=$(submit "$P/exec.lua" "{\"case\": \"$1\", \"dir\": \"$D\"}")
  wait_run "$id" 60
}
main_out() { echo "$1" | json_get 'j["output"]["main"]'; }

out=$(run_case basic)
assert_eq "$(main_out "$out" | json_get '[j["status"], j["signal"], j["stdout"], j["stderr"], j["timed_out"]]')" \
  '[3, 0, "hello\nline2\n", "oops\n", false]' "status, stdout and stderr"
rid=$(echo "$out" | json_get 'j["run_id"]')
logs=$(api_get "/v1/runs/$rid/logs")
assert_contains "$logs" '"hello"' "stdout lines go to the task log"
assert_contains "$logs" '[stderr] oops' "stderr lines too, marked"

out=$(run_case io)
assert_eq "$(main_out "$out" | json_get 'j["stdout"]')" "from stdin
FOO=bar
$D" "stdin, env and cwd"

out=$(run_case cuda)
assert_eq "$(echo "$out" | json_get 'j["output"]["main"]["got"]')" "|PCI_BUS_ID" "no GPU: CUDA_VISIBLE_DEVICES is empty"
g=$(echo "$out" | json_get 'j["output"]["gpu"]')
assert_eq "$(echo "$g" | json_get 'j["got"] == j["want"] + "|PCI_BUS_ID" and j["want"] in ("0", "1")')" true "a gpus = 1 task gets its device in CUDA_VISIBLE_DEVICES ($g)"

out=$(run_case bounded)
assert_eq "$(main_out "$out" | json_get '[j["small"], j["small_dropped"], j["big"], j["big_dropped"]]')" \
  '[1000, 4000, 1048576, 1951424]' "outputs are bounded (1 MiB by default), the rest counted"

gone() { # pid: not running (absent, or a zombie that is not the worker's)
  local st
  st=$(awk '{print $3, $4}' "/proc/$1/stat" 2>/dev/null) || return 0
  case "$st" in "Z "*) [ "${st#Z }" != "$CPU_PID" ] ;; *) return 1 ;; esac
}
no_zombies() { ! ps -o stat= --ppid "$CPU_PID" | grep -q Z; }

out=$(run_case timeout)
assert_eq "$(main_out "$out" | json_get '[j["timed_out"], j["signal"], j["status"]]')" '[true, 15, 143]' "the timeout ends the process with SIGTERM"
wait_for 10 gone "$(cat "$D/grandchild")" || fail "the grandchild outlived the timeout"
ok "the grandchild is gone too ($(main_out "$out" | json_get 'round(j["seconds"], 2)') s)"
no_zombies || fail "the worker has zombie children"
ok "no zombie left"

rm -f "$D/child" "$D/grandchild"
id=$(submit "$P/exec.lua" "{\"case\": \"cancel\", \"dir\": \"$D\"}")
wait_for 20 test -s "$D/grandchild" || fail "the cancel case did not start"
child=$(cat "$D/child"); grandchild=$(cat "$D/grandchild")
api_post "/v1/runs/$id/cancel" '{}' >/dev/null
out=$(wait_run "$id" 30)
assert_eq "$(echo "$out" | json_get 'j["state"]')" cancelled "the run is cancelled"
wait_for 10 gone "$child" || fail "the child ignoring TERM outlived the cancel"
wait_for 10 gone "$grandchild" || fail "the grandchild outlived the cancel"
ok "cancel ends the group (TERM ignored, then KILL)"
no_zombies || fail "the worker has zombie children after cancel"
ok "no zombie left after cancel"

out=$(run_case missing)
assert_eq "$(echo "$out" | json_get 'j["state"]')" failed "a program that cannot start fails the task"
rid=$(echo "$out" | json_get 'j["run_id"]')
assert_contains "$(api_get "/v1/runs/$rid/tasks")" "cannot start '/no/such/program'" "with the reason"

# 100 processes at once on one worker.
id=$(submit "$P/exec_many.lua" '{"n": 100, "probe_s": 3}')
out=$(wait_run "$id" 120)
assert_eq "$(echo "$out" | json_get 'j["state"]')" succeeded "100 concurrent processes succeed"
api_get "/v1/runs/$id/tasks" >"$TMP/many.json"
fig=$("$PY" - "$TMP/many.json" <<'PY'
import json, sys, datetime
t = json.load(open(sys.argv[1]))["tasks"]
procs = [x for x in t if x["name"] == "proc"]
probe = [x for x in t if x["name"] == "probe"][0]["output"]
ts = lambda s: datetime.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
start = min(ts(x["started_at"]) for x in procs)
end = max(x["output"] for x in procs)
print("exec100: %d processes (0.2 s each) in %.2f s; worst loop stall %.1f ms" % (len(procs), end - start, probe * 1000))
PY
)
echo "$fig"
stall=$(echo "$fig" | sed 's/.*stall \([0-9.]*\) ms/\1/')
"$PY" -c "import sys; sys.exit(0 if float('$stall') < 1000 else 1)" || fail "the loop stalled for ${stall} ms"
ok "the loop kept turning (stall under a second, on a busy machine)"
! grep -q "missed 3 heartbeats" "$TMP/scheduler.log" || fail "the scheduler lost a worker meanwhile"
ok "heartbeats kept flowing"
no_zombies || fail "zombies after 100 processes"
ok "no zombie after 100 processes"

# Worker shutdown ends running processes too (TERM is ignored: KILL after the grace).
rm -f "$D/child" "$D/grandchild"
id=$(submit "$P/exec.lua" "{\"case\": \"cancel\", \"dir\": \"$D\"}")
wait_for 20 test -s "$D/grandchild" || fail "the shutdown case did not start"
child=$(cat "$D/child"); grandchild=$(cat "$D/grandchild")
kill -TERM "$CPU_PID"
wait_for 20 bash -c "! kill -0 $CPU_PID" || fail "the worker did not stop"
wait_for 10 gone "$child" || fail "the child outlived the worker"
wait_for 10 gone "$grandchild" || fail "the grandchild outlived the worker"
ok "a stopping worker ends its programs' groups, then exits"
grep -q "loop closed with handles still open" "$TMP/worker-cpu.log" && fail "the worker left handles open"
echo "1 passed, 0 failed"
