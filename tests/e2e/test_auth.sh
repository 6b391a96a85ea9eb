#!/usr/bin/env bash
# The API stays on loopback unless tokens are configured, and with tokens
# every call but /healthz needs one.
source "$(dirname "$0")/cluster.sh"
port=$(free_port)
wport=$(free_port)
if "$SCHED_BIN" --api "0.0.0.0:$port" --listen "tcp://127.0.0.1:$wport" --state "sqlite:$TMP/a.db" \
    >"$TMP/refused.log" 2>&1; then
  fail "the scheduler listened on 0.0.0.0 without tokens"
fi
assert_contains "$(cat "$TMP/refused.log")" "token" "refusal says tokens are needed"
if "$SCHED_BIN" --api "127.0.0.1:$port" --listen "tcp://0.0.0.0:$wport" --state "sqlite:$TMP/b.db" \
    >"$TMP/refused2.log" 2>&1; then
  fail "the scheduler listened for workers on 0.0.0.0 without keys"
fi
ok "worker port stays on loopback"

secret="s3cr3t-$(date +%s%N)"
printf '# tokens\n%s\n' "$secret" >"$TMP/tokens"
start_scheduler --token-file "$TMP/tokens"
assert_eq "$(api_status "$API/v1/runs")" 401 "no token: 401"
assert_eq "$(api_status -H "Authorization: Bearer wrong" "$API/v1/runs")" 401 "wrong token: 401"
assert_eq "$(api_status -H "Authorization: Bearer $secret" "$API/v1/runs")" 200 "right token: 200"
assert_eq "$(api_status "$API/healthz")" 200 "healthz needs no token"
if grep -q "$secret" "$TMP/scheduler.log"; then fail "the token appears in the log"; fi
ok "the token never reaches the log"
echo "1 passed, 0 failed"
