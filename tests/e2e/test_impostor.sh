#!/usr/bin/env bash
# A worker is its connection: a peer that takes a registered worker's id
# as its ZeroMQ routing id and sends RESULTs (the dispatch ids of the past
# were sequential) gets them refused and counted, and the real worker keeps
# its connection; a HELLO claiming a live worker's id from another
# connection is refused. (Under CURVE, another key: tests/e2e/test_curve.sh.)
source "$(dirname "$0")/cluster.sh"
P="$SRC/tests/e2e/pipelines"
IMP="$BUILD/tests/zmq_impostor"
metric() { api_get /metrics | awk -v k="$1" '$1 == k { print $2 }'; }

start_scheduler
start_worker real --slots 4
wait_workers 1
connected=$(api_get /v1/workers | json_get 'j["workers"][0]["connected_at"]')
epoch=$(api_get /healthz | json_get 'j["epoch"]')
id=$(submit "$P/sleepers.lua" '{"n": 4, "s": 1.0}')
sleep 0.3
assert_eq "$("$IMP" "tcp://127.0.0.1:$WPORT" result w-real "$epoch")" sent "the impostor sent its results"
wait_for 10 bash -c "[ \"\$(curl -s $API/metrics | awk '\$1 == \"trellis_dropped_frames_total{reason=\\\"unknown_worker\\\"}\" { print \$2 }')\" -ge 1000 ]" \
  || fail "forged results were not all dropped: $(metric 'trellis_dropped_frames_total{reason="unknown_worker"}')"
ok "1000 forged RESULTs under the worker's id are dropped and counted"
out=$("$IMP" "tcp://127.0.0.1:$WPORT" hello w-real cpu)
assert_eq "$out" "bye: worker id in use by another connection" "a HELLO for a live worker's id is refused"
assert_eq "$(metric 'trellis_dropped_frames_total{reason="impersonation"}')" 1 "the refused HELLO is counted"
assert_eq "$(wait_run "$id" | json_get 'j["output"]["sum"]')" 10 "the run's outputs are the real worker's"
assert_eq "$(api_get "/v1/runs/$id/tasks" | json_get '[t["worker"] for t in j["tasks"] if t["name"] == "nap"]')" \
  '["w-real", "w-real", "w-real", "w-real"]' "every task ran on the real worker"
assert_eq "$(api_get /v1/workers | json_get '[(w["id"], w["connected_at"]) for w in j["workers"]]')" \
  "[[\"w-real\", \"$connected\"]]" "the real worker kept its connection"
assert_eq "$(metric 'trellis_dropped_frames_total{reason="stale_result"}')" 0 "no result of the real worker was refused"
if grep -q "worker gone" "$TMP/scheduler.log"; then fail "the real worker was dropped"; fi
ok "the real worker was never dropped"
echo "1 passed, 0 failed"
