#!/usr/bin/env bash
# kill -9 of a worker in the middle of its tasks: the scheduler presumes it
# dead after three missed heartbeats, re-queues its tasks, and the run still
# succeeds with every output.
source "$(dirname "$0")/cluster.sh"
P="$SRC/tests/e2e/pipelines"
start_scheduler
start_worker a --slots 3
A_PID=$WPID
start_worker b --slots 3
wait_workers 2

id=$(submit "$P/sleepers.lua" '{"n": 12, "s": 1.0}')
wait_for 20 bash -c "curl -s $API/v1/runs/$id/tasks | $PY -c 'import json,sys; sys.exit(0 if any(t[\"worker\"]==\"w-a\" and t[\"state\"]==\"running\" for t in json.load(sys.stdin)[\"tasks\"]) else 1)'" \
  || fail "worker a never ran a task"
kill -9 "$A_PID"
ok "killed worker a mid-task"
out=$(wait_run "$id" 60)
assert_eq "$(echo "$out" | json_get 'j["state"]')" succeeded "the run succeeds without worker a"
assert_eq "$(echo "$out" | json_get 'j["output"]["sum"]')" 78 "every output is present (sum 1..12)"
requeued=$(api_get /metrics | grep 'trellis_tasks_total{outcome="requeued"}' | awk '{print $2}')
[ "$requeued" -ge 1 ] || fail "no task was re-queued"
ok "the dead worker's tasks were re-queued ($requeued)"
assert_eq "$(api_get /v1/workers | json_get '[w["id"] for w in j["workers"]]')" '["w-b"]' "the dead worker left the registry"
echo "1 passed, 0 failed"
