#!/usr/bin/env bash
# trellis.secret: read from the worker's --secrets-dir (one trailing newline
# dropped) or TRELLIS_SECRET_<NAME>; a value it gave out is redacted from the
# task's output (strings and keys), its error and its log lines before they
# leave the worker, so neither the API, the state file nor the logs hold it.
source "$(dirname "$0")/cluster.sh"
P="$SRC/tests/e2e/pipelines"
SECRET="s3cr3t-Tok3n-$RANDOM$RANDOM"
ENVSECRET="env-only-value-$RANDOM$RANDOM"
mkdir -p "$TMP/secrets"
printf '%s\n' "$SECRET" > "$TMP/secrets/API_TOKEN"
start_scheduler
TRELLIS_SECRET_FROM_ENV="$ENVSECRET" start_worker a --secrets-dir "$TMP/secrets"
wait_workers 1
id=$(submit "$P/secrets.lua")
run=$(wait_run "$id")
assert_eq "$(echo "$run" | json_get 'j["state"]')" failed "the failing task fails the run"
tasks=$(api_get "/v1/runs/$id/tasks")
logs=$(api_get "/v1/runs/$id/logs")
out() { echo "$tasks" | json_get "[t for t in j['tasks'] if t['name'] == '$1'][0]$2"; }
assert_eq "$(out out '["output"]["len"]')" "${#SECRET}" "the file's value, its trailing newline dropped"
assert_eq "$(out out '["output"]["token"]')" "[redacted]" "an output string equal to the secret is redacted"
assert_eq "$(out out '["output"]["note"]')" "Bearer [redacted]!" "inside a longer string too"
assert_eq "$(out out '["output"]["list"]')" '["[redacted]", "plain"]' "in arrays"
assert_eq "$(out out '["output"]["[redacted]"]')" "as a key" "and as a map key"
assert_contains "$(out fail '["error"]')" "login refused for token [redacted]" "the error is redacted"
assert_contains "$logs" "calling with [redacted] now" "the log line is redacted"
assert_eq "$(out env '["output"]["len"]')" "${#ENVSECRET}" "TRELLIS_SECRET_FROM_ENV is read"
assert_contains "$logs" "env secret [redacted]" "and redacted too"
assert_contains "$(out checks '["output"]["missing"]')" "secret_not_found: NOPE" "an unknown secret: secret_not_found"
assert_contains "$(out checks '["output"]["traversal"]')" "invalid secret name" "a path is not a name"
assert_contains "$(out checks '["output"]["dot"]')" "invalid secret name" "nor a dot file"
assert_eq "$(out checks '["output"]["any_ok"]')" "false" "none of them read anything"
all="$tasks$logs$(api_get "/v1/runs/$id")"
case "$all" in *"$SECRET"*|*"$ENVSECRET"*) fail "a secret reached the API in clear" ;; esac
ok "no secret in the API's answers"
kill -TERM "$SCHED_PID"; wait "$SCHED_PID" 2>/dev/null || true
if grep -a -q -e "$SECRET" -e "$ENVSECRET" "$TMP"/state.db* "$TMP"/*.log; then
  fail "a secret is in the state or a log file in clear"
fi
ok "no secret in the state file or the daemons' logs"
