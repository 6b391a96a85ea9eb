#!/usr/bin/env bash
# kill -9 of the scheduler mid-run, restart on the same state: the run
# finishes, and no task whose result was durable before the kill runs again.
source "$(dirname "$0")/cluster.sh"
P="$SRC/tests/e2e/pipelines"
start_scheduler
start_worker a --slots 2
start_worker b --slots 2
wait_workers 2

id=$(submit "$P/sleepers.lua" '{"n": 24, "s": 0.4}')
wait_for 30 bash -c "curl -s $API/v1/runs/$id | $PY -c 'import json,sys; sys.exit(0 if json.load(sys.stdin)[\"tasks\"][\"succeeded\"] >= 6 else 1)'" \
  || fail "the run made no progress"
kill -9 "$SCHED_PID"
ok "killed the scheduler mid-run"
# What the state holds now is what must never run again.
if [ "$STATE_KIND" = etcd ]; then
  # Keys are <prefix>/tasks/<run>/<task>/<index, 10 digits>; this pipeline never fails.
  durable=$(ETCDCTL_API=3 etcdctl --endpoints="$ETCD_EP" get --prefix --keys-only \
    "$ETCD_PREFIX/tasks/$id/" | awk -F/ 'NF > 2 { printf "%s:%d ", $(NF-1), $NF + 0 }')
else
  durable=$("$PY" -c 'import sqlite3,sys
db = sqlite3.connect(sys.argv[1])
rows = db.execute("select name, idx from tasks where run_id=? and state=?", (sys.argv[2], "succeeded")).fetchall()
print(" ".join("%s:%d" % r for r in rows))' "$TMP/state.db" "$id")
fi
n_durable=$(echo "$durable" | wc -w)
[ "$n_durable" -ge 6 ] || fail "expected at least 6 durable results, got $n_durable"
ok "$n_durable task results were durable at the kill"
for w in a b; do wc -l <"$TMP/worker-$w.log" >"$TMP/mark-$w"; done

start_scheduler
ok "restarted the scheduler on the same state"
out=$(wait_run "$id" 90)
assert_eq "$(echo "$out" | json_get 'j["state"]')" succeeded "the run finishes after the restart"
assert_eq "$(echo "$out" | json_get 'j["output"]["sum"]')" 300 "with every output (sum 1..24)"
for w in a b; do
  tail -n +"$(( $(cat "$TMP/mark-$w") + 1 ))" "$TMP/worker-$w.log" >>"$TMP/after-kill.txt"
done
again=0
for t in $durable; do
  name=${t%%:*}; idx=${t##*:}
  if grep -q "task start run=$id task=$name index=$idx " "$TMP/after-kill.txt"; then
    echo "task $name[$idx] ran again after the restart"; again=$((again + 1))
  fi
done
assert_eq "$again" 0 "no task with a durable result ran again"
started_after=$(grep -c "task start run=$id" "$TMP/after-kill.txt" || true)
[ "$started_after" -ge 1 ] || fail "nothing was re-dispatched after the restart"
ok "$started_after task instances were (re)dispatched after the restart"

# Once more, after the run finished: it is read back from the state, and the
# listing still counts its tasks (it once showed TASKS 0/0).
kill -9 "$SCHED_PID"
start_scheduler
# With etcd it stands by until the killed one's lease runs out.
wait_for 60 bash -c "curl -s '$API/v1/runs?limit=5' | grep -q '\"$id\"'" \
  || fail "the restarted scheduler did not list the run"
listed=$(curl -s "$API/v1/runs?limit=5" | json_get '[r for r in j["runs"] if r["run_id"] == "'"$id"'"][0]["tasks"]')
one=$(curl -s "$API/v1/runs/$id" | json_get 'j["tasks"]')
assert_eq "$listed" "$one" "GET /v1/runs counts the tasks of a run read back from the state as GET /v1/runs/{id} does"
assert_contains "$listed" '"succeeded": ' "with its succeeded tasks"
echo "1 passed, 0 failed"
