#!/usr/bin/env bash
# on_budget = "approve" end to end (docs/budgets.md): an LLM call that does not
# fit its run's budget is held in the scheduler for an operator, decided with
# the approvals route (`trellis approve RUN TASK [--reject]`):
#   - the held call shows as "waiting": "budget_approval" in the run's tasks
#     and in GET /v1/budgets "pending", with what it asks;
#   - approved, the call is made (the fake provider counts it) and the run
#     succeeds, spent counted beyond the limit; the decision is audited with
#     the operator's token name;
#   - rejected, the run fails with budget_exceeded naming the operator;
#   - undecided, it is rejected before the task's own timeout;
#   - cancelling the run, or its worker dying, drops it.
source "$(dirname "$0")/cluster.sh"
P="$SRC/tests/e2e/pipelines"
TRELLIS="$BUILD/cli/trellis"

"$PY" "$SRC/tests/llm/fake_llm.py" >"$TMP/fake.port" 2>"$TMP/fake.log" &
PIDS+=("$!")
wait_for 10 test -s "$TMP/fake.port" || fail "fake LLM server did not start"
FPORT=$(head -n1 "$TMP/fake.port")
cat >"$TMP/providers.json" <<JSON
{"fake": {"kind": "openai", "base_url": "http://127.0.0.1:$FPORT/v1", "default": true,
          "models": {"ok-appr": {}}}}
JSON

# Tokens: every curl of the helpers is the cluster's admin (through .curlrc);
# decisions are made by the operator "alice" with the CLI.
sfx="$(date +%s%N)"
ROOT="root-$sfx"; OPT="op-$sfx"
printf '%s\n%s operator default name=alice\n' "$ROOT" "$OPT" >"$TMP/tokens"
mkdir -p "$TMP/curlhome"
printf 'header = "Authorization: Bearer %s"\n' "$ROOT" >"$TMP/curlhome/.curlrc"
export CURL_HOME="$TMP/curlhome"
start_scheduler --token-file "$TMP/tokens"
start_worker a1 --slots 4 --providers "$TMP/providers.json"
wait_workers 1
# trellis budgets set: a tenant budget that all of this test's calls fit.
TRELLIS_TOKEN="$ROOT" "$TRELLIS" --api "$API" budgets set default --cost 100 --tokens 100000 \
  --period day >"$TMP/set.out" 2>&1 || fail "trellis budgets set: $(cat "$TMP/set.out")"
assert_contains "$(cat "$TMP/set.out")" "budget of default: cost 100, tokens 100000, period day" "trellis budgets set"
decide() { TRELLIS_TOKEN="$OPT" "$TRELLIS" --api "$API" approve "$@"; }
served() { curl -s "http://127.0.0.1:$FPORT/stats" | json_get 'j["calls"].get("ok-appr", 0)'; }
# wait_held RUN: until the run's task shows the held call
wait_held() {
  wait_for 60 bash -c "curl -s $API/v1/runs/$1/tasks | grep -q budget_approval" \
    || fail "run $1's call is not shown held: $(api_get "/v1/runs/$1/tasks")"
}

# --- approve ---------------------------------------------------------------------
id=$(submit "$P/llm_budget_approve.lua")
wait_held "$id"
api_get "/v1/runs/$id/tasks" >"$TMP/t1.json"
api_get /v1/budgets >"$TMP/b1.json"
"$PY" - "$TMP/t1.json" "$TMP/b1.json" "$id" <<'PY' || fail "the held call's state"
import json, sys
t = json.load(open(sys.argv[1]))["tasks"][0]
b = json.load(open(sys.argv[2]))
assert t["state"] == "running" and t["waiting"] == "budget_approval", t
ba = t["budget_approval"]
assert ba["tokens"] == 25 and ba["tenant"] == "default", ba     # 9 (prompt "hi") + 16
assert ba["reason"].startswith("run tokens budget of " + sys.argv[3]), ba
assert ba["budget"]["run"]["tokens"] == 10, ba
assert ba["expires_at"] is not None, ba
p = b["pending"]
assert len(p) == 1 and p[0]["run_id"] == sys.argv[3] and p[0]["task"] == "ask", p
PY
ok "a call past its run's budget is held: waiting budget_approval, listed in /v1/budgets pending"
assert_eq "$(served)" 0 "nothing is sent to the provider while held"
TRELLIS_TOKEN="$ROOT" "$TRELLIS" --api "$API" budgets >"$TMP/budgets.out" 2>&1 || fail "trellis budgets: $(cat "$TMP/budgets.out")"
assert_contains "$(cat "$TMP/budgets.out")" "$id  ask" "trellis budgets lists the held call"
decide "$id" ask --comment "worth it" >"$TMP/approve.out" 2>&1 || fail "trellis approve: $(cat "$TMP/approve.out")"
run=$(wait_run "$id" 60)
assert_eq "$(echo "$run" | json_get 'j["state"]')" succeeded "approved, the run succeeds"
assert_eq "$(served)" 1 "approved, the call is made (provider count +1)"
assert_eq "$(api_get /v1/budgets | json_get 'len(j["pending"])')" 0 "nothing pending after the decision"
api_get "/v1/audit?limit=100" >"$TMP/audit.json"
"$PY" - "$TMP/audit.json" "$id" <<'PY' || fail "the approval's audit entry"
import json, sys
es = [e for e in json.load(open(sys.argv[1]))["entries"] if e["action"] == "budget.approve"]
assert len(es) == 1, es
e = es[0]
assert e["object"] == sys.argv[2] + "/ask", e
assert "alice" in json.dumps(e), e
PY
ok "the decision is audited (budget.approve, alice)"
api_get /metrics >"$TMP/metrics.txt"
grep -q '^trellis_budget_refused_total{tenant="default"} 1$' "$TMP/metrics.txt" || fail "metrics: $(grep budget "$TMP/metrics.txt")"
grep -q '^trellis_budget_spent_cost{tenant="default"} ' "$TMP/metrics.txt" || fail "no spent cost metric"
grep -q '^trellis_budget_approvals_pending 0$' "$TMP/metrics.txt" || fail "no pending metric"
ok "/metrics has the budget counters"

# --- reject -----------------------------------------------------------------------
id=$(submit "$P/llm_budget_approve.lua")
wait_held "$id"
decide "$id" ask --reject >"$TMP/reject.out" 2>&1 || fail "trellis approve --reject: $(cat "$TMP/reject.out")"
run=$(wait_run "$id" 60)
assert_eq "$(echo "$run" | json_get 'j["state"]')" failed "rejected, the run fails"
err=$(api_get "/v1/runs/$id/tasks" | json_get 'j["tasks"][0]["error"]')
assert_contains "$err" "budget_exceeded: rejected by alice" "the error names the operator"
assert_eq "$(served)" 1 "rejected, nothing is sent"

# --- timeout ----------------------------------------------------------------------
id=$(submit "$P/llm_budget_approve_timeout.lua")
wait_held "$id"
run=$(wait_run "$id" 60)
assert_eq "$(echo "$run" | json_get 'j["state"]')" failed "undecided, the run fails"
err=$(api_get "/v1/runs/$id/tasks" | json_get 'j["tasks"][0]["error"]')
assert_contains "$err" "budget_exceeded: rejected by timeout" "undecided, the call is rejected by the timeout"

# --- cancel -----------------------------------------------------------------------
id=$(submit "$P/llm_budget_approve.lua")
wait_held "$id"
api_post "/v1/runs/$id/cancel" '{}' >/dev/null
run=$(wait_run "$id" 60)
assert_eq "$(echo "$run" | json_get 'j["state"]')" cancelled "the run is cancelled"
assert_eq "$(api_get /v1/budgets | json_get 'len(j["pending"])')" 0 "a cancel drops the held call"
assert_eq "$(api_status -X POST -H 'Content-Type: application/json' --data '{"decision":"approve"}' "$API/v1/runs/$id/approvals/ask")" 400 "nothing left to decide in a cancelled run"
assert_eq "$(served)" 1 "the provider saw only the approved call"

# --- the worker dies ------------------------------------------------------------
id=$(submit "$P/llm_budget_approve.lua")
wait_held "$id"
kill -9 "$WPID"
wait "$WPID" 2>/dev/null || true
wait_for 60 bash -c "[ \"\$(curl -s $API/v1/budgets | $PY -c 'import json,sys; print(len(json.load(sys.stdin)[\"pending\"]))')\" = 0 ]" \
  || fail "a dead worker's held call is still pending: $(api_get /v1/budgets)"
ok "a worker that dies drops its held call"
api_post "/v1/runs/$id/cancel" '{}' >/dev/null
