#!/usr/bin/env bash
# CPU-bound tasks do not take their worker down: the count hook enforces the
# timeout on every run of a pipeline version (not only the first on a
# worker), cancel stops a task with no timeout, and preemption keeps
# heartbeats, results and other tasks flowing while a task spins.
# Heartbeats every 400 ms: the worker is dropped after 1.2 s of silence, far
# below the 3 s timeout of section 3, with room for a busy test machine.
HB_MS="${HB_MS:-400}"
source "$(dirname "$0")/cluster.sh"
P="$SRC/tests/e2e/pipelines"
start_scheduler
start_worker a --slots 2
wait_workers 1

task_field() { # run-id python-expr-on-task0
  api_get "/v1/runs/$1/tasks" | json_get "$2"
}
worker_listed() {
  api_get /v1/workers | json_get '[w["id"] for w in j["workers"]]'
}

# 1. timeout = 1 stops the task on the first and on the second run on the same worker.
for n in 1 2; do
  id=$(submit "$P/cpu_timeout1.lua")
  out=$(wait_run "$id" 60)
  assert_eq "$(echo "$out" | json_get 'j["state"]')" failed "run $n of a spinning task with timeout = 1 fails"
  err=$(task_field "$id" 'j["tasks"][0]["error"]')
  assert_contains "$err" "timed out after 1 s" "run $n: the worker stopped it at its timeout"
  assert_eq "$(task_field "$id" 'j["tasks"][0]["attempts"]')" 1 "run $n: one attempt, never re-sent"
done
assert_eq "$(worker_listed)" '["w-a"]' "the worker is still listed"

# 2. With no timeout the task spins until CANCEL; meanwhile other tasks run on
#    the same worker and its heartbeats keep it listed.
spin=$(submit "$P/cpu_forever.lua")
wait_for 30 bash -c "curl -s $API/v1/runs/$spin/tasks | grep -q '\"running\"'" || fail "the spinner never ran"
sleep 2 # five heartbeat intervals of the test cluster
for n in 1 2 3; do
  id=$(submit "$P/hello.lua")
  out=$(wait_run "$id" 30)
  assert_eq "$(echo "$out" | json_get 'j["state"]')" succeeded "task $n runs beside the spinner"
done
assert_eq "$(worker_listed)" '["w-a"]' "the worker stays listed while a task spins"
assert_eq "$(api_post "/v1/runs/$spin/cancel" '{}' | json_get 'j["state"]')" cancelled "cancel answers"
wait_for 30 grep -q 'task=spin .*reason=cancelled' "$TMP/worker-a.log" || fail "the worker never stopped the spinner"
ok "cancel stopped the spinning task on the worker"
wait_for 30 bash -c "[ \"\$(curl -s $API/v1/workers | $PY -c 'import json,sys; print(json.load(sys.stdin)[\"workers\"][0][\"busy\"])')\" = 0 ]" \
  || fail "the spinner's slot was not freed: $(api_get /v1/workers)"
ok "the spinner's slot is free again"

# 3. timeout = 3 (seven heartbeat intervals): the worker's own result ends it.
id=$(submit "$P/cpu_timeout3.lua")
out=$(wait_run "$id" 60)
assert_eq "$(echo "$out" | json_get 'j["state"]')" failed "a spinning task with timeout = 3 fails"
err=$(task_field "$id" 'j["tasks"][0]["error"]')
assert_contains "$err" "timed out after 3 s" "the worker reported the timeout"
case "$err" in *"no answer from worker"*) fail "the scheduler gave up on the worker: $err" ;; esac
grep -q 'worker gone worker=w-a' "$TMP/scheduler.log" && fail "the worker was dropped at some point"
ok "the worker was never dropped"
grep -q 'refused stale result' "$TMP/scheduler.log" && fail "a result was refused as stale"
ok "no result was refused as stale"

# 4. A file whose top level computes for 6 s is evaluated off the worker's
#    loop: a task of another pipeline finishes meanwhile, and the worker stays.
slow=$(submit "$P/slow_load.lua")
sleep 0.5 # the worker has the file by now and evaluates it
id=$(submit "$P/hello.lua")
assert_eq "$(wait_run "$id" 30 | json_get 'j["state"]')" succeeded "a task runs while a file loads"
out=$(wait_run "$slow" 60)
first=$(grep -oE "task done run=$id|loaded pipeline 'e2e-slow-load@1'" "$TMP/worker-a.log" | head -1)
assert_eq "$first" "task done run=$id" "... before the slow file had loaded"
assert_eq "$(echo "$out" | json_get 'j["output"]["after"]')" loaded "the slow file's task ran"
grep -q 'worker gone worker=w-a' "$TMP/scheduler.log" && fail "the worker was dropped while a file loaded"
ok "the worker was not dropped while the file loaded"
assert_eq "$(worker_listed)" '["w-a"]' "the worker is still listed at the end"
echo "all passed"
