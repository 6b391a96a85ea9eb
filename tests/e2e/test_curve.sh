#!/usr/bin/env bash
# Worker connections authenticated and encrypted with CURVE: the scheduler
# admits only the worker keys it lists (the refusal is logged and counted),
# and with keys it may listen beyond loopback.
source "$(dirname "$0")/cluster.sh"
P="$SRC/tests/e2e/pipelines"
CLI="$BUILD/cli/trellis"
K="$TMP/keys"
"$CLI" keygen scheduler --dir "$K" >/dev/null
"$CLI" keygen good --dir "$K" >/dev/null
"$CLI" keygen bad --dir "$K" >/dev/null
"$CLI" keygen other --dir "$K" >/dev/null
[ "$(stat -c %a "$K/good.key")" = 600 ] || fail "key pair file is not private"
ok "keygen writes a private key pair and a public key"
mkdir "$K/allowed" && cp "$K/good.pub" "$K/other.pub" "$K/allowed/"
if "$CLI" keygen good --dir "$K" >/dev/null 2>&1; then fail "keygen overwrote a key"; fi
ok "keygen refuses to overwrite"

# With keys, listening on all interfaces is allowed; the test only connects to 127.0.0.1.
WPORT=$(free_port)
start_scheduler --curve-key "$K/scheduler.key" --curve-allow "$K/allowed" \
  --listen "tcp://0.0.0.0:$WPORT"
start_worker good --curve-key "$K/good.key" --curve-server "$K/scheduler.pub"
start_worker bad --curve-key "$K/bad.key" --curve-server "$K/scheduler.pub"
start_worker plain
wait_workers 1
wait_for 10 bash -c "[ \$(curl -s $API/metrics | awk '\$1 == \"trellis_worker_auth_refused_total\" { print \$2 }') -ge 1 ]" \
  || fail "the wrong key was not refused"
ok "the worker with a key not on the list is refused and counted"
sleep 1
assert_eq "$(api_get /v1/workers | json_get '[w["id"] for w in j["workers"]]')" '["w-good"]' "only the listed worker joined (the plain one cannot speak CURVE)"
grep -q "refused worker key" "$TMP/scheduler.log" || fail "the refusal was not logged"
ok "the refusal is logged"
if grep -q "secret" "$TMP/scheduler.log"; then fail "a secret key reached the log"; fi
id=$(submit "$P/diamond.lua" '{"x": 2}')
assert_eq "$(wait_run "$id" | json_get 'j["output"]["d"]')" 9 "the authenticated worker runs tasks"
# Another allowed key cannot speak as w-good: its HELLO is refused.
connected=$(api_get /v1/workers | json_get 'j["workers"][0]["connected_at"]')
out=$("$BUILD/tests/zmq_impostor" "tcp://127.0.0.1:$WPORT" hello w-good cpu "$K/other.key" "$K/scheduler.pub")
assert_eq "$out" "bye: worker id in use by another key" "key A cannot claim key B's worker id"
assert_eq "$(api_get /metrics | awk '$1 == "trellis_dropped_frames_total{reason=\"impersonation\"}" { print $2 }')" 1 "the impersonation is counted"
out=$("$BUILD/tests/zmq_impostor" "tcp://127.0.0.1:$WPORT" hello w-other cpu "$K/other.key" "$K/scheduler.pub")
assert_eq "$out" "welcome" "the other key is welcome under its own worker id"
id=$(submit "$P/diamond.lua" '{"x": 3}')
assert_eq "$(wait_run "$id" | json_get 'j["output"]["d"]')" 12 "w-good still runs tasks"
assert_eq "$(api_get /v1/workers | json_get '[w["connected_at"] for w in j["workers"] if w["id"] == "w-good"]')" \
  "[\"$connected\"]" "w-good kept its connection"
echo "1 passed, 0 failed"
