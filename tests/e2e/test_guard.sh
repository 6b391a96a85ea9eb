#!/usr/bin/env bash
# Guardrails end to end (docs/guardrails.md): the real scheduler and worker
# against tests/llm/fake_llm.py. Input PII reaches the provider redacted; a
# blocked injection never reaches it (counted per model by the fake); an
# output that fails its schema fails the task with guard_blocked, or returns
# the pipeline's fallback; trellis_guard_blocked_total counts the blocked
# calls and the audit log records them; a guard naming an unknown check is
# refused at submit.
source "$(dirname "$0")/cluster.sh"
P="$SRC/tests/e2e/pipelines"

"$PY" "$SRC/tests/llm/fake_llm.py" >"$TMP/fake.port" 2>"$TMP/fake.log" &
PIDS+=("$!")
wait_for 10 test -s "$TMP/fake.port" || fail "fake LLM server did not start"
FPORT=$(head -n1 "$TMP/fake.port")
cat >"$TMP/providers.json" <<JSON
{"fake": {"kind": "openai", "base_url": "http://127.0.0.1:$FPORT/v1", "default": true}}
JSON

start_scheduler
start_worker g --slots 4 --providers "$TMP/providers.json"
wait_workers 1

id=$(submit "$P/guard.lua")
run=$(wait_run "$id" 90)
assert_eq "$(echo "$run" | json_get 'j["state"]')" failed "the run fails (the schema task fails closed)"
api_get "/v1/runs/$id/tasks" >"$TMP/tasks.json"
task() { "$PY" -c 'import json,sys
t = {x["name"]: x for x in json.load(open(sys.argv[1]))["tasks"]}[sys.argv[2]]
print(json.dumps(eval(sys.argv[3]), sort_keys=True))' "$TMP/tasks.json" "$1" "$2"; }

assert_eq "$(task redact 't["output"]["text"]')" '"echo: my email is [EMAIL] and my card [CARD]"' \
  "the provider received the prompt redacted (its echo shows it)"
assert_eq "$(task redact 't["output"]["redacted"]')" 2 "two findings redacted"

assert_eq "$(task inject 't["output"]["ok"]')" false "the injection is blocked"
assert_contains "$(task inject 't["output"]["err"]')" "guard_blocked: injection: input stage" \
  "the error names the check"

assert_eq "$(task schema 't["state"]')" '"failed"' "an answer failing its schema fails the task"
assert_contains "$(task schema 't["error"]')" "guard_blocked: schema: output stage" \
  "with guard_blocked: schema"

assert_eq "$(task fallback 't["output"]')" \
  '{"blocked": "schema", "guarded": true, "text": "I can'"'"'t help with that."}' \
  "with a fallback, the call returns the fallback answer, guarded"
assert_eq "$(task schema_ok 't["output"]')" '{"guarded": false, "type": "json_object"}' \
  "an answer that fits its schema passes, decoded"
assert_eq "$(task fallback 'len([u for u in t["usage"] if u.get("guard")])')" 1 \
  "the blocked call is listed as a guard record in the task's usage"

stats=$(curl -s "http://127.0.0.1:$FPORT/stats")
calls() { echo "$stats" | json_get "j['calls'].get('$1', 0)"; }
assert_eq "$(calls ok-inject)" 0 "the blocked injection never reached the provider"
assert_eq "$(calls ok-redact)" 1 "the redacted call reached it once"
assert_eq "$(calls ok-schema)" 1 "an output-blocked call was made once (no retry)"
assert_eq "$(calls ok-fallback)" 1 "the fallback call was made once"
assert_eq "$(echo "$run" | json_get 'j["usage"]["guard_blocked"]')" 3 "the run's usage counts 3 blocked calls"
assert_eq "$(echo "$run" | json_get 'j["usage"]["calls"]')" 4 "and 4 calls that reached the provider"

metrics=$(api_get /metrics)
assert_contains "$metrics" 'trellis_guard_blocked_total{pipeline="e2e-guard",check="injection",stage="input"} 1' \
  "/metrics counts the blocked injection"
assert_contains "$metrics" 'trellis_guard_blocked_total{pipeline="e2e-guard",check="schema",stage="output"} 2' \
  "/metrics counts the two schema failures"

audit=$(api_get "/v1/audit")
assert_eq "$(echo "$audit" | json_get "len([e for e in j['entries'] if e['action'] == 'guard.blocked' and e['object'] == '$id'])")" 3 \
  "the audit log records each blocked call"

body=$("$PY" -c 'import json,sys
print(json.dumps({"source": open(sys.argv[1]).read(), "name": "guard_bad.lua"}))' "$P/guard_bad.lua")
code=$(curl -s -o "$TMP/bad.json" -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
  --data-binary "$body" "$API/v1/runs")
assert_eq "$code" 400 "a guard naming an unknown check is refused at submit"
assert_contains "$(cat "$TMP/bad.json")" "guard_bad.lua:3: trellis.pipeline: guards.input: unknown check 'toxicity'" \
  "with the line and the check's name"
echo "all guard checks passed"
