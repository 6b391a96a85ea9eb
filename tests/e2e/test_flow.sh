#!/usr/bin/env bash
# Control flow end to end: trellis.skip and trigger rules; a subrun whose
# child's output the parent gets; an approval decided with `trellis approve`
# after a kill -9 and restart of the scheduler (the wait, its child link and
# its deadline are durable); cancelling a parent cancels its child; an
# approval's timeout applies its default.
source "$(dirname "$0")/cluster.sh"
P="$SRC/tests/e2e/pipelines"
TRELLIS="$BUILD/cli/trellis"
start_scheduler
start_worker a --slots 4
wait_workers 1

# Trigger rules: all_done runs after a skip and a failure (with nil for both);
# all_success below the failure is skipped as upstream_failed, so the run fails.
id=$(submit "$P/flow_rules.lua")
out=$(wait_run "$id")
assert_eq "$(echo "$out" | json_get 'j["state"]')" failed "a leaf skipped for an upstream failure fails the run"
tasks=$(api_get "/v1/runs/$id/tasks")
st() { echo "$tasks" | json_get "[t[\"$2\"] for t in j[\"tasks\"] if t[\"name\"]==\"$1\"][0]"; }
assert_eq "$(st check state)" skipped "trellis.skip ends the task skipped"
assert_eq "$(st check error)" "nothing new" "with its reason"
assert_eq "$(st cleanup state)" succeeded "all_done runs after a skip and a failure"
assert_eq "$(echo "$tasks" | json_get '[t["output"] for t in j["tasks"] if t["name"]=="cleanup"][0] == {"check": True, "boom": True}')" true "it gets nil for both"
assert_eq "$(st never state)" skipped "all_success below a failure is skipped"
assert_contains "$(st never error)" "upstream_failed: task 'boom' failed" "as upstream_failed"

# A subrun, then an approval that waits across a scheduler restart.
register "$P/flow_child.lua"
id=$(submit "$P/flow_parent.lua")
wait_for 30 bash -c "curl -s $API/v1/runs/$id/tasks | $PY -c 'import json,sys; sys.exit(0 if any(t.get(\"waiting\")==\"approval\" for t in json.load(sys.stdin)[\"tasks\"]) else 1)'" \
  || fail "the approval never waited"
ok "the approval waits (GET /tasks says so)"
run=$(api_get "/v1/runs/$id")
child=$(echo "$run" | json_get 'j["children"][0]["run_id"]')
assert_eq "$(echo "$run" | json_get 'j["children"][0]["task"]')" sub "the parent lists its child"
crun=$(api_get "/v1/runs/$child")
assert_eq "$(echo "$crun" | json_get 'j["parent"]')" "{\"run_id\": \"$id\", \"task\": \"sub\"}" "the child names its parent"
assert_eq "$(echo "$crun" | json_get 'j["params"]["q"]')" 21 "the params function made the child's params"
assert_eq "$(echo "$crun" | json_get 'j["state"]')" succeeded "the child ran"
assert_eq "$(api_status -X POST -H 'Content-Type: application/json' --data '{"decision":"maybe"}' "$API/v1/runs/$id/approvals/gate")" 400 "a bad decision is refused"
assert_eq "$(api_status -X POST -H 'Content-Type: application/json' --data '{"decision":"approve"}' "$API/v1/runs/$id/approvals/a")" 400 "a task that is not an approval is refused"
assert_eq "$(api_status -X POST -H 'Content-Type: application/json' --data '{"decision":"approve"}' "$API/v1/runs/$id/approvals/nope")" 404 "an unknown task is 404"

kill -9 "$SCHED_PID"
ok "killed the scheduler while the approval waits"
start_scheduler
wait_workers 1
wait_for 30 bash -c "curl -s $API/v1/runs/$id/tasks | $PY -c 'import json,sys; sys.exit(0 if any(t.get(\"waiting\")==\"approval\" for t in json.load(sys.stdin)[\"tasks\"]) else 1)'" \
  || fail "the approval does not wait after the restart"
ok "the approval waits again after the restart"
"$TRELLIS" --api "$API" tasks "$id" >"$TMP/tasks.out" 2>&1 || fail "trellis tasks: $(cat "$TMP/tasks.out")"
assert_contains "$(cat "$TMP/tasks.out")" "running (waiting for approval)" "trellis tasks shows the wait"
"$TRELLIS" --api "$API" approve "$id" gate --comment "ship it" >"$TMP/approve.out" 2>&1 || fail "trellis approve: $(cat "$TMP/approve.out")"
assert_contains "$(cat "$TMP/approve.out")" "approved task gate of run $id" "trellis approve says so"
out=$(wait_run "$id")
assert_eq "$(echo "$out" | json_get 'j["state"]')" succeeded "the parent finishes"
assert_eq "$(echo "$out" | json_get 'j["output"]["final"] == {"doubled": 42, "decision": "approve", "comment": "ship it", "user": "anonymous"}')" true \
  "downstream gets the child's output and the decision"
assert_eq "$(api_status -X POST -H 'Content-Type: application/json' --data '{"decision":"approve"}' "$API/v1/runs/$id/approvals/gate")" 409 "deciding twice is a conflict"
n=$(api_get "/v1/runs?limit=50" | json_get 'len([r for r in j["runs"] if r["pipeline"]=="e2e-flow-child"])')
assert_eq "$n" 1 "one child run, not two, across the restart"

# Cancelling the parent cancels its child.
id=$(submit "$P/flow_parent.lua" '{"s": 60}')
wait_for 30 bash -c "curl -s $API/v1/runs/$id | $PY -c 'import json,sys; sys.exit(0 if json.load(sys.stdin).get(\"children\") else 1)'" \
  || fail "the child never started"
child=$(api_get "/v1/runs/$id" | json_get 'j["children"][0]["run_id"]')
assert_eq "$(api_post "/v1/runs/$id/cancel" '{}' | json_get 'j["state"]')" cancelled "the parent is cancelled"
out=$(wait_run "$child" 20)
assert_eq "$(echo "$out" | json_get 'j["state"]')" cancelled "and so is its child"
assert_contains "$(echo "$out" | json_get 'j["error"]')" "parent run $id was cancelled" "which says why"

# Nobody answers: the default (reject) applies at the timeout.
id=$(submit "$P/flow_timeout.lua")
out=$(wait_run "$id" 30)
assert_eq "$(echo "$out" | json_get 'j["state"]')" failed "a rejected approval fails the run"
assert_contains "$(echo "$out" | json_get 'j["error"]')" "rejected by timeout" "the timeout's default decided"
echo "1 passed, 0 failed"
