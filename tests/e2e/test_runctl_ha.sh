#!/usr/bin/env bash
# Run control with two schedulers on one etcd: the CLI pointed at the standby
# follows its redirect to the leader (trellis runs, run --wait, retry), and an
# Idempotency-Key holds across a failover (kill -9 of the leader).
TR_E2E_STATE=etcd
source "$(dirname "$0")/cluster.sh"
P="$SRC/tests/e2e/pipelines"
CLI="$BUILD/cli/trellis"
TTL=2
start_state
declare -A SAPI SWPORT SPID
for n in s1 s2; do SAPI[$n]=$(free_port); SWPORT[$n]=$(free_port); done
start_sched() {
  local n="$1"
  "$SCHED_BIN" --id "$n" --api "127.0.0.1:${SAPI[$n]}" --listen "tcp://127.0.0.1:${SWPORT[$n]}" \
    --state "$STATE_URL" --heartbeat-ms "$HB_MS" --leader-ttl "$TTL" >>"$TMP/scheduler-$n.log" 2>&1 &
  SPID[$n]=$!
  PIDS+=("${SPID[$n]}")
  wait_for 20 curl -sf "http://127.0.0.1:${SAPI[$n]}/healthz" || fail "scheduler $n did not answer"
}
ready() { [ "$(api_status "http://127.0.0.1:${SAPI[$1]}/readyz")" = 200 ]; }
start_sched s1
wait_for 20 ready s1 || fail "s1 did not lead"
start_sched s2
wait_for 10 bash -c "curl -s http://127.0.0.1:${SAPI[s2]}/readyz | grep -q '\"leader\"'" \
  || fail "the standby did not learn the leader"
EPS="tcp://127.0.0.1:${SWPORT[s2]},tcp://127.0.0.1:${SWPORT[s1]}"
"$WORKER_BIN" --scheduler "$EPS" --id w-a --slots 4 --heartbeat-ms "$HB_MS" >>"$TMP/worker-a.log" 2>&1 &
PIDS+=("$!")
API="http://127.0.0.1:${SAPI[s1]}"
wait_workers 1
STANDBY="http://127.0.0.1:${SAPI[s2]}"

# ---- the CLI follows the standby's redirect --------------------------------
out=$("$CLI" --api "$STANDBY" runs --json) || fail "trellis runs through the standby failed: $out"
assert_contains "$out" '"runs"' "trellis runs via the standby lists the leader's runs"
out=$("$CLI" --api "$STANDBY" run "$P/diamond.lua" -p x=5 --wait --json) \
  || fail "trellis run via the standby failed: $out"
assert_eq "$(echo "$out" | json_get 'j["output"]["d"]')" 18 "trellis run --wait via the standby (POST and long-poll)"
rid=$(echo "$out" | json_get 'j["run_id"]')
assert_eq "$("$CLI" --api "$STANDBY" status "$rid" --json | json_get 'j["state"]')" succeeded \
  "trellis status via the standby"

# ---- an idempotency key across a failover ----------------------------------
body=$("$PY" -c 'import json,sys
print(json.dumps({"source": open(sys.argv[1]).read(), "name": "diamond.lua", "params": {"x": 2}}))' "$P/diamond.lua")
post() { curl -s -X POST -H "Idempotency-Key: ha-key-1" -H 'Content-Type: application/json' \
           --data-binary "$body" -o "$TMP/ans" -w '%{http_code}' "$1/v1/runs"; echo " $(json_get 'j["run_id"]' <"$TMP/ans")"; }
first=$(post "$API")
assert_eq "${first%% *}" 201 "the first request with the key"
kid=${first#* }
kill -KILL "${SPID[s1]}"
wait_for 30 ready s2 || fail "s2 did not take over"
API="$STANDBY"
again=$(post "$API")
assert_eq "$again" "200 $kid" "after the failover the key still names its run (200, same id)"
assert_eq "$(wait_run "$kid" | json_get 'j["state"]')" succeeded "and that run finishes on the new leader"
