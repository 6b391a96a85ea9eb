#!/usr/bin/env bash
# Pools route tasks to the workers that advertise them; cache=true reuses an
# output for the same pipeline version, task and inputs; a worker presumed
# dead that comes back has its late results refused (fencing), not recorded.
source "$(dirname "$0")/cluster.sh"
P="$SRC/tests/e2e/pipelines"
start_scheduler
start_worker cpu1 --pool cpu --slots 4
start_worker gpu1 --pool gpu --gpus 1 --slots 2 --label model=test
wait_workers 2
w=$(api_get /v1/workers)
assert_eq "$(echo "$w" | json_get '[x["resources"]["gpus"] for x in j["workers"] if x["id"]=="w-gpu1"][0]')" 1 "the gpu worker advertises its GPU"
assert_eq "$(echo "$w" | json_get '[x["labels"] for x in j["workers"] if x["id"]=="w-gpu1"][0]')" '{"model": "test"}' "labels are shown"

id=$(submit "$P/pools.lua")
out=$(wait_run "$id")
assert_eq "$(echo "$out" | json_get 'j["output"]')" '{"embed": "gpu:trellis", "expensive": 7000}' "pools pipeline output"
tasks=$(api_get "/v1/runs/$id/tasks")
assert_eq "$(echo "$tasks" | json_get '[t["worker"] for t in j["tasks"] if t["name"]=="embed"][0]')" w-gpu1 "the gpu task ran on the gpu worker"
assert_eq "$(echo "$tasks" | json_get '[t["worker"] for t in j["tasks"] if t["name"]=="tokenize"][0]')" w-cpu1 "the cpu task ran on the cpu worker"
assert_eq "$(echo "$tasks" | json_get '[t["cached"] for t in j["tasks"] if t["name"]=="expensive"][0]')" false "first run computes"

id2=$(submit "$P/pools.lua")
out=$(wait_run "$id2")
assert_eq "$(echo "$out" | json_get 'j["output"]["expensive"]')" 7000 "second run has the same output"
assert_eq "$(api_get "/v1/runs/$id2/tasks" | json_get '[t["cached"] for t in j["tasks"] if t["name"]=="expensive"][0]')" true "second run reuses the cached output"
assert_eq "$(grep -c "task start run=$id2 task=expensive" "$TMP/worker-cpu1.log" || true)" 0 "the cached task did not run again"
id3=$(submit "$P/pools.lua" '{"word": "dag"}')
out=$(wait_run "$id3")
assert_eq "$(echo "$out" | json_get 'j["output"]["expensive"]')" 3000 "other inputs miss the cache"

# Fencing: stop a worker holding tasks so that it misses its heartbeats; its
# tasks are re-dispatched to the other worker and the run succeeds. When it
# goes on, its late results are refused, never recorded over the live ones.
start_worker cpu2 --pool cpu --slots 4
C2=$WPID
wait_workers 3
kill -STOP "$C2"
id4=$(submit "$P/sleepers.lua" '{"n": 8, "s": 0.3}')
out=$(wait_run "$id4" 30)
assert_eq "$(echo "$out" | json_get 'j["output"]["sum"]')" 36 "the run succeeds with every output while a worker is frozen"
requeued=$(api_get "/v1/runs/$id4/tasks" | json_get 'len([t for t in j["tasks"] if t["attempts"] >= 2])')
[ "$requeued" -ge 1 ] || fail "no task of the frozen worker was re-dispatched"
ok "$requeued tasks of the frozen worker were re-dispatched"
kill -CONT "$C2"
refused() { api_get /metrics | awk '$1 ~ /reason="(stale_result|unknown_worker)"/ { s += $2 } END { print s + 0 }'; }
wait_for 10 bash -c "[ \$(curl -s $API/metrics | awk '\$1 ~ /reason=\"(stale_result|unknown_worker)\"/ { s += \$2 } END { print s + 0 }') -ge 1 ]" \
  || fail "the late results of the frozen worker were not refused"
ok "late results refused ($(refused))"
assert_eq "$(api_get "/v1/runs/$id4" | json_get 'j["output"]["sum"]')" 36 "the recorded outputs did not change"
wait_workers 3
ok "the worker came back with a new session"
echo "1 passed, 0 failed"
