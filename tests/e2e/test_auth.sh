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

# A line longer than 4 KiB refuses the file, naming the line.
printf '# tokens\n%s\n' "$(head -c 5000 /dev/zero | tr '\0' x)" >"$TMP/too-long"
if "$SCHED_BIN" --api "127.0.0.1:$port" --listen "tcp://127.0.0.1:$wport" --state "sqlite:$TMP/c.db" \
    --token-file "$TMP/too-long" >"$TMP/refused3.log" 2>&1; then
  fail "the scheduler started with a 5,000-byte token line"
fi
assert_contains "$(cat "$TMP/refused3.log")" "line 2" "a too long token line is refused with its number"

secret="s3cr3t-$(date +%s%N)"
# A token longer than the 1,023 bytes lines were once read in is one token.
long="L$(head -c 1500 /dev/urandom | od -An -tx1 | tr -d ' \n' | head -c 2999)"
printf '# tokens\n%s\n%s\n' "$secret" "$long" >"$TMP/tokens"
start_scheduler --token-file "$TMP/tokens"
assert_eq "$(api_status -H "Authorization: Bearer $long" "$API/v1/runs")" 200 "a 3,000-byte token: 200"
assert_eq "$(api_status -H "Authorization: Bearer ${long:0:1023}" "$API/v1/runs")" 401 "its first 1,023 bytes: 401"
assert_eq "$(api_status -H "Authorization: Bearer ${long:1023}" "$API/v1/runs")" 401 "the rest of it: 401"
assert_eq "$(api_status "$API/v1/runs")" 401 "no token: 401"
assert_eq "$(api_status -H "Authorization: Bearer wrong" "$API/v1/runs")" 401 "wrong token: 401"
assert_eq "$(api_status -H "Authorization: Bearer $secret" "$API/v1/runs")" 200 "right token: 200"
assert_eq "$(api_status "$API/healthz")" 200 "healthz needs no token"
if grep -q "$secret" "$TMP/scheduler.log"; then fail "the token appears in the log"; fi
ok "the token never reaches the log"
echo "1 passed, 0 failed"
