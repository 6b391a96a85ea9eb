#!/usr/bin/env bash
# deploy/prometheus/alerts.yaml and deploy/grafana/trellis.json against a
# real scheduler: promtool checks the rules and runs their unit tests
# (tests/deploy/alerts_test.yaml); a scheduler and a worker run a pipeline
# with an LLM call, feedback and enough numeric outputs for drift, and every
# series the rules and the dashboard query must be on its /metrics page.
source "$TR_SOURCE_DIR/tests/e2e/cluster.sh"
PROMTOOL="${PROMTOOL:-promtool}"
command -v "$PROMTOOL" >/dev/null || fail "promtool is missing (scripts/install-deps.sh: prometheus)"
"$PROMTOOL" check rules "$SRC/deploy/prometheus/alerts.yaml" || fail "promtool check rules"
(cd "$SRC/tests/deploy" && "$PROMTOOL" test rules alerts_test.yaml) || fail "promtool test rules"
ok "promtool: the rules check and their unit tests pass"
"$PY" -c 'import json,sys; json.load(open(sys.argv[1]))' "$SRC/deploy/grafana/trellis.json" \
  || fail "the dashboard is not JSON"

"$PY" "$SRC/tests/llm/fake_llm.py" >"$TMP/fake.port" 2>"$TMP/fake.log" &
PIDS+=("$!")
wait_for 10 test -s "$TMP/fake.port" || fail "fake LLM server did not start"
BASE="http://127.0.0.1:$(head -n1 "$TMP/fake.port")"
export FAKE_LLM_KEY=k
cat >"$TMP/providers.json" <<JSON
{"fake": {"kind": "openai", "base_url": "$BASE/v1", "api_key_env": "FAKE_LLM_KEY",
          "default": true, "prices": {"input": 1.0, "output": 2.0}}}
JSON
start_scheduler
start_worker obs --slots 32 --providers "$TMP/providers.json"
wait_workers 1
R=$(submit "$SRC/tests/e2e/pipelines/otel.lua" "{\"base\": \"$BASE\", \"n\": 700}")
assert_eq "$(wait_run "$R" 120 | json_get 'j["state"]')" succeeded "a run with 700 numeric outputs"
api_post /v1/feedback "{\"run_id\": \"$R\", \"score\": -1}" >/dev/null
wait_for 10 bash -c "curl -s $API/metrics | grep -q '^trellis_feedback_negative_ratio'" \
  || fail "no feedback ratio"
curl -s "$API/metrics" >"$TMP/metrics.txt"
"$PY" "$SRC/tests/deploy/check_metric_names.py" "$SRC/deploy/prometheus/alerts.yaml" \
  "$SRC/deploy/grafana/trellis.json" "$TMP/metrics.txt" >"$TMP/check.out" \
  || { cat "$TMP/check.out"; fail "the rules or the dashboard query series the scheduler does not export"; }
ok "every series of the rules and the dashboard is exported ($(grep -c '^ok' "$TMP/check.out") checks)"
