#!/usr/bin/env bash
# etcd stopped for ten seconds in the middle of a run, under a leader and a
# standby: neither scheduler crashes, the leader answers 503 on writes while
# etcd is gone, keeps its lease across etcd's restart (no failover), and
# finishes the run with every output durable. Then the leader's lease is
# revoked from outside: it stops with exit status 3 at once, and the standby
# leads.
TR_E2E_STATE=etcd
source "$(dirname "$0")/cluster.sh"
P="$SRC/tests/e2e/pipelines"
command -v etcdctl >/dev/null || fail "etcdctl not found (apt-get install etcd-client)"
start_state
ectl() { ETCDCTL_API=3 etcdctl --endpoints="$ETCD_EP" "$@"; }

declare -A SAPI SWPORT SPID
for n in s1 s2; do SAPI[$n]=$(free_port); SWPORT[$n]=$(free_port); done
start_sched() {
  local n="$1"
  "$SCHED_BIN" --id "$n" --api "127.0.0.1:${SAPI[$n]}" --listen "tcp://127.0.0.1:${SWPORT[$n]}" \
    --state "$STATE_URL" --heartbeat-ms "$HB_MS" --leader-ttl 3 >>"$TMP/scheduler-$n.log" 2>&1 &
  SPID[$n]=$!
  PIDS+=("${SPID[$n]}")
  wait_for 20 curl -sf "http://127.0.0.1:${SAPI[$n]}/healthz" || fail "scheduler $n did not answer"
}
ready() { [ "$(api_status "http://127.0.0.1:${SAPI[$1]}/readyz")" = 200 ]; }

start_sched s1
wait_for 20 ready s1 || fail "the first scheduler did not become the leader"
start_sched s2
EPS="tcp://127.0.0.1:${SWPORT[s1]},tcp://127.0.0.1:${SWPORT[s2]}"
for w in a b; do
  "$WORKER_BIN" --scheduler "$EPS" --id "w-$w" --slots 8 --heartbeat-ms "$HB_MS" \
    >>"$TMP/worker-$w.log" 2>&1 &
  PIDS+=("$!")
done
API="http://127.0.0.1:${SAPI[s1]}"
wait_workers 2

id=$(submit "$P/sleepers.lua" '{"n": 600, "s": 0.1}')
wait_for 60 bash -c "curl -s $API/v1/runs/$id | $PY -c 'import json,sys; sys.exit(0 if json.load(sys.stdin)[\"tasks\"][\"succeeded\"] >= 100 else 1)'" \
  || fail "the run made no progress"
bash "$SRC/tests/etcd/stop-etcd.sh" "$TMP/etcd" --keep >/dev/null 2>&1
t0=$(date +%s)
ok "stopped etcd mid-run"
body=$("$PY" -c 'import json,sys; print(json.dumps({"source": open(sys.argv[1]).read(), "name": "x", "params": {"n": 1, "s": 0}}))' "$P/sleepers.lua")
wait_for 8 bash -c "[ \"\$(curl -s -m 2 -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/json' --data-binary '$body' $API/v1/runs)\" = 503 ]" \
  || fail "writes were not refused with 503 while etcd is gone"
ok "the leader answers 503 on writes while etcd is gone"
# Let the outage last ten seconds in all, then bring etcd back on its ports.
while [ $(( $(date +%s) - t0 )) -lt 10 ]; do
  for n in s1 s2; do kill -0 "${SPID[$n]}" 2>/dev/null || fail "scheduler $n died while etcd was down"; done
  sleep 0.5
done
bash "$SRC/tests/etcd/start-etcd.sh" "$TMP/etcd" >/dev/null || fail "etcd did not restart"
ok "restarted etcd after $(( $(date +%s) - t0 )) s"
out=$(wait_run "$id" 180)
assert_eq "$(echo "$out" | json_get 'j["state"]')" succeeded "the run finishes after etcd is back"
assert_eq "$(echo "$out" | json_get 'j["output"]["sum"]')" 180300 "with every output (sum 1..600)"
assert_eq "$(ectl get --prefix --keys-only "$ETCD_PREFIX/tasks/$id/" | grep -c .)" 602 \
  "every task instance has a durable record"
for n in s1 s2; do kill -0 "${SPID[$n]}" 2>/dev/null || fail "scheduler $n died"; done
ok "neither scheduler crashed"
assert_contains "$(ectl get --print-value-only "$ETCD_PREFIX/leader")" '"id":"s1"' \
  "the leader kept its lease across etcd's restart"
assert_eq "$(api_status "http://127.0.0.1:${SAPI[s1]}/readyz")" 200 "and is ready again"

# The leader's lease revoked from outside: it must stop acting at once.
lease=$(ectl get "$ETCD_PREFIX/leader" -w json | "$PY" -c 'import json,sys; print("%x" % json.load(sys.stdin)["kvs"][0]["lease"])')
ectl lease revoke "$lease" >/dev/null || fail "cannot revoke the leader lease"
wait_for 10 bash -c "! kill -0 ${SPID[s1]} 2>/dev/null" || fail "the leader did not stop"
wait "${SPID[s1]}" && rc=0 || rc=$?
assert_eq "$rc" 3 "a leader whose lease was revoked exits with status 3"
assert_contains "$(cat "$TMP/scheduler-s1.log")" "lost leadership" "and says why"
wait_for 10 ready s2 || fail "the standby did not take over"
ok "the standby leads"
API="http://127.0.0.1:${SAPI[s2]}"
id2=$(submit "$P/sleepers.lua" '{"n": 10, "s": 0}')
out=$(wait_run "$id2" 60)
assert_eq "$(echo "$out" | json_get 'j["state"]')" succeeded "a run on the new leader succeeds"
echo "1 passed, 0 failed"
