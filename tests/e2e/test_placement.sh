#!/usr/bin/env bash
# Run controls on real processes: tasks with labels land only on workers
# carrying them, a task for a label nobody has is reported then fails
# `unschedulable`; a concurrency key holds at most its limit of tasks running
# at once across runs (200 competing tasks); max_active_runs queues further
# runs and starts them in order; a pipeline's timeout fails the run and stops
# its running task.
source "$(dirname "$0")/cluster.sh"
P="$SRC/tests/e2e/pipelines"
start_scheduler --unschedulable-timeout 3
start_worker za --slots 16 --label zone=a
start_worker zb --slots 16 --label zone=b --label disk=ssd
wait_workers 2

# Placement.
id=$(submit "$P/placement.lua")
out=$(wait_run "$id" 60)
assert_eq "$(echo "$out" | json_get 'j["state"]')" succeeded "the placement run succeeds"
tasks=$(api_get "/v1/runs/$id/tasks")
assert_eq "$(echo "$tasks" | json_get 'sorted(set(t["worker"] for t in j["tasks"] if t["name"]=="in_a"))')" '["w-za"]' "zone=a tasks ran only on the zone=a worker"
assert_eq "$(echo "$tasks" | json_get 'sorted(set(t["worker"] for t in j["tasks"] if t["name"]=="in_b"))')" '["w-zb"]' "zone=b,disk=ssd tasks ran only on the worker with both labels"
assert_eq "$(echo "$tasks" | json_get 'len([t for t in j["tasks"] if t["name"] in ("in_a", "in_b")])')" 12 "every instance ran"

# A label nobody carries: reported while it waits, then unschedulable.
id=$(submit "$P/placement_none.lua")
wait_for 10 bash -c "curl -s $API/v1/runs/$id/tasks | grep -q 'no worker with labels zone=c in pool cpu'" \
  || fail "the waiting task does not say why: $(api_get "/v1/runs/$id/tasks")"
ok "the task says it waits for a worker with zone=c"
assert_contains "$(api_get "/v1/runs/$id" | json_get 'j.get("waiting")')" "task 'nowhere' waits: no worker with labels zone=c in pool cpu" "so does the run"
assert_eq "$(api_get /metrics | awk '$1 == "trellis_tasks_unschedulable" { print $2 }')" 1 "the unschedulable gauge counts it"
out=$(wait_run "$id" 30)
assert_eq "$(echo "$out" | json_get 'j["state"]')" failed "the run fails once no worker joined in time"
assert_contains "$(echo "$out" | json_get 'j["error"]')" "unschedulable: no worker with labels zone=c in pool cpu" "with an unschedulable error"
assert_eq "$(api_get /metrics | awk '$1 == "trellis_tasks_unschedulable_total" { print $2 }')" 1 "and the counter"
grep -q "cannot be placed: no worker with labels zone=c" "$TMP/scheduler.log" || fail "no log line"
ok "a log line reported it"

# Concurrency: 4 runs of 50 tasks on one key (limit 4), two workers of 16 slots.
ids=()
for i in 1 2 3 4; do ids+=("$(submit "$P/concurrency.lua")"); done
outs="$TMP/conc.json"
: >"$outs"
for id in "${ids[@]}"; do
  out=$(wait_run "$id" 120)
  assert_eq "$(echo "$out" | json_get 'j["state"]')" succeeded "concurrency run $id succeeds"
  echo "$out" >>"$outs"
done
peak=$("$PY" - "$outs" <<'PY'
import json, sys
ev = []
n = 0
for line in open(sys.argv[1]):
    for t0, t1 in json.loads(line)["output"]["use"]:
        ev += [(t0, 1), (t1, -1)]
        n += 1
ev.sort(key=lambda e: (e[0], e[1]))
cur = peak = 0
for _, d in ev:
    cur += d
    peak = max(peak, cur)
print(n, peak)
PY
)
set -- $peak
assert_eq "$1" 200 "200 competing tasks finished"
[ "$2" -ge 1 ] && [ "$2" -le 4 ] || fail "$2 tasks of the key ran at once (limit 4)"
ok "at most 4 ran at once (peak $2)"
assert_eq "$(api_get /metrics | grep -c 'trellis_concurrency_held{key="e2e-gpu"}' || true)" 0 "the key is gone once unused"

# max_active_runs = 1: three runs, one at a time, in submission order (the
# first one long enough for the others to be seen queued).
a=$(submit "$P/max_active.lua" '{"s": 3}'); b=$(submit "$P/max_active.lua"); c=$(submit "$P/max_active.lua")
st=$(api_get "/v1/runs/$c")
assert_eq "$(echo "$st" | json_get 'j["state"]')" queued "the third run is queued"
assert_contains "$(echo "$st" | json_get 'j["waiting"]')" "max_active_runs = 1" "and says why"
ia=$(wait_run "$a" 30 | json_get 'j["output"]["work"]')
ib=$(wait_run "$b" 30 | json_get 'j["output"]["work"]')
ic=$(wait_run "$c" 30 | json_get 'j["output"]["work"]')
"$PY" -c 'import json,sys
a, b, c = (json.loads(x) for x in sys.argv[1:])
assert a[1] <= b[0] and b[1] <= c[0], (a, b, c)' "$ia" "$ib" "$ic" || fail "runs overlapped: $ia $ib $ic"
ok "the runs ran one after another, in order"

# max_active_runs across a scheduler killed and restarted on the same state:
# the running run is resumed first, the queued one still waits, then starts.
a=$(submit "$P/max_active.lua" '{"s": 2}'); b=$(submit "$P/max_active.lua")
wait_for 10 bash -c "curl -s $API/v1/runs/$a | grep -q '\"state\":\"running\"'" || fail "run $a did not start"
kill -9 "$SCHED_PID"
start_scheduler --unschedulable-timeout 3
assert_eq "$(api_get "/v1/runs/$b" | json_get 'j["state"]')" queued "after a restart the second run is still queued"
ia=$(wait_run "$a" 30 | json_get 'j["output"]["work"]')
ib=$(wait_run "$b" 30 | json_get 'j["output"]["work"]')
"$PY" -c 'import json,sys
a, b = (json.loads(x) for x in sys.argv[1:])
assert a[1] <= b[0], (a, b)' "$ia" "$ib" || fail "runs overlapped after the restart: $ia $ib"
ok "after the restart they still ran one after the other"

# The pipeline's timeout.
id=$(submit "$P/run_timeout.lua")
out=$(wait_run "$id" 30)
assert_eq "$(echo "$out" | json_get 'j["state"]')" failed "the run fails at its timeout"
assert_contains "$(echo "$out" | json_get 'j["error"]')" "run_timeout" "with run_timeout"
tasks=$(api_get "/v1/runs/$id/tasks")
assert_eq "$(echo "$tasks" | json_get '[t["state"] for t in j["tasks"]]')" '["cancelled", "cancelled"]' "its tasks are cancelled"
wait_for 10 grep -q "task done run=$id task=long .*reason=cancelled" "$TMP/worker-za.log" "$TMP/worker-zb.log" \
  || fail "the running task was not stopped"
ok "the running task was stopped (it would have slept 60 s)"
echo "1 passed, 0 failed"
