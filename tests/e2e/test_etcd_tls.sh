#!/usr/bin/env bash
# etcd over TLS with client certificates: the scheduler's --etcd-cacert,
# --etcd-cert and --etcd-key reach a member that refuses clients without a
# certificate, and pipelines run on that state.
source "$(dirname "$0")/cluster.sh"
P="$SRC/tests/e2e/pipelines"
bash "$SRC/tests/etcd/make-certs.sh" "$TMP/certs" >/dev/null 2>&1 || fail "cannot make certificates"
TR_ETCD_TLS="$TMP/certs" bash "$SRC/tests/etcd/start-etcd.sh" "$TMP/etcd" --fresh >/dev/null \
  || fail "etcd over TLS did not start"
EP=$(cat "$TMP/etcd/endpoint")
ok "etcd over TLS at $EP"

# Without a client certificate the member refuses the scheduler: it stays a
# standby that never becomes ready, and keeps serving /healthz.
port=$(free_port)
"$SCHED_BIN" --api "127.0.0.1:$port" --listen "tcp://127.0.0.1:$(free_port)" \
  --state "etcd://$EP?timeout_ms=1000" --etcd-cacert "$TMP/certs/ca.pem" >"$TMP/nocert.log" 2>&1 &
NOCERT=$!
PIDS+=("$NOCERT")
wait_for 20 curl -sf "http://127.0.0.1:$port/healthz" || fail "the refused scheduler does not answer /healthz"
sleep 2
assert_eq "$(api_status "http://127.0.0.1:$port/readyz")" 503 "without a client certificate the scheduler never becomes ready"
kill -TERM "$NOCERT"
if "$SCHED_BIN" --state "sqlite:$TMP/x.db" --etcd-cacert "$TMP/certs/ca.pem" >"$TMP/flags.log" 2>&1; then
  fail "--etcd-cacert was accepted with a SQLite state"
fi
assert_contains "$(cat "$TMP/flags.log")" "etcd://" "TLS flags without etcd state are refused"

STATE_URL="etcd://$EP?prefix=/tls-e2e"
start_scheduler --etcd-cacert "$TMP/certs/ca.pem" --etcd-cert "$TMP/certs/client.pem" \
  --etcd-key "$TMP/certs/client-key.pem"
start_worker a --slots 4
wait_workers 1
id=$(submit "$P/diamond.lua" '{"x": 4}')
assert_eq "$(wait_run "$id" | json_get 'j["output"]["d"]')" 15 "a pipeline runs on etcd over TLS"
echo "1 passed, 0 failed"
