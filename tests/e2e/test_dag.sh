#!/usr/bin/env bash
# DAG semantics end to end: a diamond, a map over 500 elements and a reduce,
# retries, timeouts, a task that raises, cancel, logs.
source "$(dirname "$0")/cluster.sh"
P="$SRC/tests/e2e/pipelines"
start_scheduler
start_worker a --slots 8
start_worker b --slots 8
wait_workers 2

id=$(submit "$P/diamond.lua" '{"x": 5}')
out=$(wait_run "$id")
assert_eq "$(echo "$out" | json_get 'j["state"]')" succeeded "diamond succeeds"
assert_eq "$(echo "$out" | json_get 'j["output"]')" '{"d": 18}' "diamond output is d = 18"
assert_eq "$(echo "$out" | json_get 'j["tasks"]["succeeded"]')" 4 "diamond ran 4 tasks"
assert_eq "$(echo "$out" | json_get 'j["params"]["x"]')" 5 "params override the default"
logs=$(api_get "/v1/runs/$id/logs?task=d")
assert_eq "$(echo "$logs" | json_get 'j["logs"][0]["lines"]')" '["sum of 10 and 8"]' "ctx.log lines kept"
tasks=$(api_get "/v1/runs/$id/tasks")
assert_eq "$(echo "$tasks" | json_get '[t["name"] for t in j["tasks"]][0]')" a "tasks in topological order"
assert_eq "$(echo "$tasks" | json_get '[t["output"] for t in j["tasks"] if t["name"]=="b"][0]')" 10 "task output visible"

id=$(submit "$P/map_reduce.lua" '{"n": 500}')
out=$(wait_run "$id" 120)
assert_eq "$(echo "$out" | json_get 'j["state"]')" succeeded "map of 500 succeeds"
assert_eq "$(echo "$out" | json_get 'j["output"]["total"]')" '{"sum": 41791750, "count": 500}' "reduce saw all 500 outputs"
assert_eq "$(echo "$out" | json_get 'j["tasks"]["total"]')" 502 "502 task instances"
n=$(api_get "/v1/runs/$id/tasks" | json_get 'len([t for t in j["tasks"] if t["name"]=="square" and t["state"]=="succeeded"])')
assert_eq "$n" 500 "500 mapped instances succeeded"

id=$(submit "$P/retry.lua")
out=$(wait_run "$id")
assert_eq "$(echo "$out" | json_get 'j["state"]')" succeeded "flaky task succeeds with retries = 3"
assert_eq "$(echo "$out" | json_get 'j["output"]["flaky"]')" 3 "it succeeded on attempt 3"
assert_eq "$(api_get "/v1/runs/$id/tasks" | json_get 'j["tasks"][0]["attempts"]')" 3 "three attempts recorded"

id=$(submit "$P/timeout.lua")
out=$(wait_run "$id" 60)
assert_eq "$(echo "$out" | json_get 'j["state"]')" failed "a run with timed-out tasks fails"
tasks=$(api_get "/v1/runs/$id/tasks")
assert_contains "$(echo "$tasks" | json_get '[t["error"] for t in j["tasks"] if t["name"]=="sleepy"][0]')" "timed out" "sleeping task timed out"
assert_contains "$(echo "$tasks" | json_get '[t["error"] for t in j["tasks"] if t["name"]=="spinner"][0]')" "timed out" "CPU-bound task timed out"
assert_eq "$(echo "$tasks" | json_get '[t["output"] for t in j["tasks"] if t["name"]=="fine"][0]')" alive "the workers kept running other tasks"

id=$(submit "$P/raises.lua")
out=$(wait_run "$id")
assert_eq "$(echo "$out" | json_get 'j["state"]')" failed "a raising task fails the run"
assert_contains "$(echo "$out" | json_get 'j["error"]')" "task 'boom' failed" "run error names the task"
tasks=$(api_get "/v1/runs/$id/tasks")
err=$(echo "$tasks" | json_get '[t["error"] for t in j["tasks"] if t["name"]=="boom"][0]')
assert_contains "$err" "raises.lua:3: bad input 1" "error has file and line"
assert_contains "$err" "stack traceback" "error has a Lua traceback"
assert_eq "$(echo "$tasks" | json_get '[t["state"] for t in j["tasks"] if t["name"]=="never"][0]')" skipped "downstream of a failure is skipped"

id=$(submit "$P/sleepers.lua" '{"n": 6, "s": 30}')
wait_for 20 bash -c "curl -s $API/v1/runs/$id | $PY -c 'import json,sys; sys.exit(0 if json.load(sys.stdin)[\"tasks\"][\"running\"] > 0 else 1)'" \
  || fail "sleepers never ran"
assert_eq "$(api_post "/v1/runs/$id/cancel" '{}' | json_get 'j["state"]')" cancelled "cancel answers cancelled"
out=$(wait_run "$id" 10)
assert_eq "$(echo "$out" | json_get 'j["state"]')" cancelled "run is cancelled"
assert_eq "$(echo "$out" | json_get 'j["tasks"]["cancelled"]')" 7 "its tasks are cancelled"
assert_eq "$(api_status -X POST "$API/v1/runs/$id/cancel")" 409 "cancelling again is a conflict"
wait_for 10 bash -c "curl -s $API/v1/workers | $PY -c 'import json,sys; sys.exit(0 if all(w[\"busy\"]==0 for w in json.load(sys.stdin)[\"workers\"]) else 1)'" \
  || fail "workers still busy after cancel"
ok "workers freed their slots after cancel"

runs=$(api_get "/v1/runs?limit=3")
assert_eq "$(echo "$runs" | json_get 'len(j["runs"])')" 3 "run listing honours limit"
assert_eq "$(echo "$runs" | json_get 'j["runs"][0]["run_id"]')" "$id" "newest run first"
m=$(api_get /metrics)
assert_contains "$m" 'trellis_runs_total{outcome="succeeded"} 3' "metrics count succeeded runs"
assert_contains "$m" 'trellis_tasks_total{outcome="retried"} 2' "metrics count retries"
echo "1 passed, 0 failed"
