#!/usr/bin/env bash
# Traces, JSON logs and per-pipeline metrics (docs/observability.md): the
# real scheduler and worker export spans to a small OTLP receiver
# (tests/otel/otlp_receiver.py); the test checks the spans' parentage
# (run -> attempt -> LLM call), names, GenAI attributes, one trace per run,
# the traceparent a scripted provider received, the JSON log lines, that no
# secret reaches either log format, and the series of /metrics with drift.
source "$(dirname "$0")/cluster.sh"
P="$SRC/tests/e2e/pipelines"

"$PY" "$SRC/tests/otel/otlp_receiver.py" >"$TMP/otlp.port" 2>"$TMP/otlp.log" &
PIDS+=("$!")
wait_for 10 test -s "$TMP/otlp.port" || fail "OTLP receiver did not start"
OTLP="http://127.0.0.1:$(head -n1 "$TMP/otlp.port")"

export TRELLIS_LLM_API_KEY="sk-trellis-llm-secret-0815"
export FAKE_LLM_KEY="$TRELLIS_LLM_API_KEY" # what the fake provider expects
"$PY" "$SRC/tests/llm/fake_llm.py" >"$TMP/fake.port" 2>"$TMP/fake.log" &
PIDS+=("$!")
wait_for 10 test -s "$TMP/fake.port" || fail "fake LLM server did not start"
BASE="http://127.0.0.1:$(head -n1 "$TMP/fake.port")"
cat >"$TMP/providers.json" <<JSON
{"fake": {"kind": "openai", "base_url": "$BASE/v1", "api_key_env": "TRELLIS_LLM_API_KEY",
          "default": true, "prices": {"input": 1.0, "output": 2.0}}}
JSON

# Secrets the daemons are given: a token file, CURVE keys, provider keys.
TOKEN="tok-secret-$(date +%s%N)"
echo "$TOKEN" >"$TMP/tokens"
"$BUILD/cli/trellis" keygen sched --dir "$TMP/keys" >/dev/null || fail "keygen"
"$BUILD/cli/trellis" keygen worker --dir "$TMP/keys" >/dev/null || fail "keygen"
mkdir -p "$TMP/allow" && cp "$TMP/keys/worker.pub" "$TMP/allow/"

# ---- JSON logs, traces ------------------------------------------------------
start_scheduler --otlp-endpoint "$OTLP" --log-format json --log-level debug \
  --token-file "$TMP/tokens" --curve-key "$TMP/keys/sched.key" --curve-allow "$TMP/allow"
AUTH=(-H "Authorization: Bearer $TOKEN")
api_get() { curl -s "${AUTH[@]}" "$API$1"; }
api_post() { curl -s "${AUTH[@]}" -X POST -H 'Content-Type: application/json' --data-binary "$2" "$API$1"; }
start_worker otel --slots 32 --providers "$TMP/providers.json" --otlp-endpoint "$OTLP" \
  --log-format json --log-level debug --curve-key "$TMP/keys/worker.key" \
  --curve-server "$TMP/keys/sched.pub"
WP="$WPID"
wait_for 20 bash -c "curl -sf -H 'Authorization: Bearer $TOKEN' $API/v1/workers | grep -q w-otel" \
  || fail "the worker did not join"

R1=$(submit "$P/otel.lua" "{\"base\": \"$BASE\", \"n\": 3}")
R2=$(submit "$P/otel.lua" "{\"base\": \"$BASE\", \"n\": 2}")
for r in "$R1" "$R2"; do
  assert_eq "$(wait_run "$r" 90 | json_get 'j["state"]')" succeeded "run $r succeeds"
done
ok "two runs with an HTTP call, an LLM call and a map"

# Spans leave within the flush interval (1 s); wait for all of R1's and R2's.
spans() { curl -s "$OTLP/spans"; }
# run + fetch + ask + list + score x n, for n = 3 and 2, and 2 LLM calls: 7 + 6 + 2
wait_for 30 bash -c "[ \$(curl -s $OTLP/spans | $PY -c 'import json,sys; print(len(json.load(sys.stdin)))') -ge 15 ]" \
  || fail "spans did not arrive: $(spans | head -c 2000)"
spans >"$TMP/spans.json"
"$PY" - "$TMP/spans.json" "$R1" "$R2" "$BASE" <<'PYEOF' || fail "span checks"
import hashlib, json, sys, urllib.request
spans = json.load(open(sys.argv[1]))
runs = sys.argv[2:4]
base = sys.argv[4]
by_id = {s["spanId"]: s for s in spans}
def check(c, what):
    if not c:
        print("FAIL:", what); sys.exit(1)
    print("ok -", what)
for run in runs:
    mine = [s for s in spans if s["attrs"].get("trellis.run.id") == run]
    traces = {s["traceId"] for s in mine}
    check(len(traces) == 1, f"one trace id for run {run}")
    tid = traces.pop()
    h = bytearray(hashlib.sha256(run.encode()).digest())
    h[0] |= 1
    check(tid == h[:16].hex(), "the trace id is derived from the run id")
    root = [s for s in mine if s["name"] == "run e2e-otel"]
    check(len(root) == 1 and "parentSpanId" not in root[0], "one root span per run")
    check(root[0]["service"] == "trellis-scheduler", "the run span comes from the scheduler")
    check(root[0]["attrs"]["trellis.run.state"] == "succeeded", "run span state")
    atts = [s for s in mine if s.get("parentSpanId") == root[0]["spanId"]]
    names = sorted(s["name"] for s in atts)
    check({"fetch", "ask", "list", "score"} <= set(names), f"attempt spans named after tasks: {names}")
    check(all(s["traceId"] == tid for s in atts), "attempts in the run's trace")
    ask = [s for s in atts if s["name"] == "ask"][0]
    llm = [s for s in spans if s.get("parentSpanId") == ask["spanId"]]
    check(len(llm) == 1, "one LLM span under the ask attempt")
    l = llm[0]
    check(l["service"] == "trellis-worker" and l["traceId"] == tid, "LLM span from the worker, same trace")
    a = l["attrs"]
    check(l["name"] == "chat ok", "LLM span name: " + l["name"])
    check(a["gen_ai.system"] == "fake" and a["gen_ai.provider.name"] == "fake", "gen_ai.system")
    check(a["gen_ai.request.model"] == "ok" and a["gen_ai.response.model"], "models")
    check(a["gen_ai.usage.input_tokens"] > 0 and a["gen_ai.usage.output_tokens"] > 0, "tokens")
    check(a["trellis.llm.cost"] > 0, "cost")
    check(isinstance(a.get("gen_ai.response.finish_reasons"), list), "finish reasons")
    check(int(l["startTimeUnixNano"]) <= int(l["endTimeUnixNano"]), "times")
    fetch = [s for s in atts if s["name"] == "fetch"][0]
    check(fetch["attrs"]["trellis.worker.id"] == "w-otel", "attempt span names the worker")
# traceparent reached the scripted provider: trace of a run, span of an LLM call
stats = json.load(urllib.request.urlopen(base + "/stats"))
tps = stats["traceparents"]
llm_ids = {(s["traceId"], s["spanId"]) for s in spans if s["service"] == "trellis-worker"}
got = {tuple(tp.split("-")[1:3]) for tp in tps}
check(len(got & llm_ids) == 2, f"the provider saw both LLM spans in traceparent ({len(tps)} headers)")
check(all(tp.startswith("00-") and tp.endswith("-01") for tp in tps), "traceparent format")
PYEOF
ok "spans: run -> attempt -> LLM call, GenAI attributes, traceparent at the provider"

# trellis.http carries the attempt's span.
body=$(api_get "/v1/runs/$R1/tasks" | json_get '[t for t in j["tasks"] if t["name"] == "fetch"][0]["output"]')
tp=$(echo "$body" | json_get 'j["headers"]["traceparent"]')
att=$("$PY" -c 'import json,sys; s=json.load(open(sys.argv[1])); print([x["spanId"] for x in s if x["name"]=="fetch" and x["attrs"]["trellis.run.id"]==sys.argv[2]][0])' "$TMP/spans.json" "$R1")
assert_contains "$tp" "-$att-" "trellis.http sends the attempt span in traceparent"

# JSON logs: every line an object with time, level, msg; run lines carry the trace.
"$PY" - "$TMP/scheduler.log" "$TMP/worker-otel.log" "$R1" <<'PYEOF' || fail "json log checks"
import json, sys
run = sys.argv[3]
seen_run = False
for f in sys.argv[1:3]:
    n = 0
    for line in open(f):
        if not line.strip():
            continue
        o = json.loads(line)
        assert {"time", "level", "msg", "process"} <= o.keys(), o
        n += 1
        if o.get("run") == run:
            seen_run = True
            assert len(o.get("trace_id", "")) == 32, o
        if f.endswith("worker-otel.log"):
            assert o.get("worker") == "w-otel", o
    assert n > 0, f
assert seen_run, "no log line names the run"
print("ok - JSON log lines: time, level, msg, run, worker, trace_id")
PYEOF

# ---- metrics ----------------------------------------------------------------
M=$(curl -s "${AUTH[@]}" "$API/metrics")
assert_contains "$M" 'trellis_pipeline_runs_total{pipeline="e2e-otel",state="succeeded"} 2' "runs by outcome"
assert_contains "$M" 'trellis_task_duration_seconds_bucket{pipeline="e2e-otel",task="ask",le="+Inf"} 2' "task duration histogram"
assert_contains "$M" 'trellis_llm_tokens_total{pipeline="e2e-otel",model="ok",kind="input"}' "tokens by model"
assert_contains "$M" 'trellis_llm_cost_total{pipeline="e2e-otel",model="ok"}' "cost by model"
echo "$M" >"$TMP/metrics.txt"

# Drift: 500 reference values, then 200 like them (PSI small), then 200 shifted (large).
R3=$(submit "$P/otel.lua" "{\"base\": \"$BASE\", \"n\": 695, \"llm\": false}")
assert_eq "$(wait_run "$R3" 120 | json_get 'j["state"]')" succeeded "reference run"
R4=$(submit "$P/otel.lua" "{\"base\": \"$BASE\", \"n\": 200, \"llm\": false}")
assert_eq "$(wait_run "$R4" 120 | json_get 'j["state"]')" succeeded "same distribution"
psi() { curl -s "${AUTH[@]}" "$API/metrics" | sed -n 's/^trellis_drift_psi{pipeline="e2e-otel",task="score"} //p'; }
p1=$(psi)
[ -n "$p1" ] || fail "no trellis_drift_psi after 900 values"
"$PY" -c "import sys; sys.exit(0 if float('$p1') < 0.1 else 1)" || fail "PSI of the same distribution is $p1"
R5=$(submit "$P/otel.lua" "{\"base\": \"$BASE\", \"n\": 2000, \"shift\": 0.5, \"llm\": false}")
assert_eq "$(wait_run "$R5" 180 | json_get 'j["state"]')" succeeded "shifted run"
p2=$(psi)
"$PY" -c "import sys; sys.exit(0 if float('$p2') > 0.25 else 1)" || fail "PSI after a shift is $p2"
ok "drift: PSI $p1 for the same distribution, $p2 after a shift"

# Feedback: the negative ratio.
api_post /v1/feedback "{\"run_id\": \"$R1\", \"score\": -1}" >/dev/null
api_post /v1/feedback "{\"run_id\": \"$R2\", \"score\": 1}" >/dev/null
wait_for 10 bash -c "curl -s -H 'Authorization: Bearer $TOKEN' $API/metrics | grep -q 'trellis_feedback_negative_ratio{pipeline=\"e2e-otel\"} 0.5'" \
  || fail "negative feedback ratio: $(curl -s "${AUTH[@]}" "$API/metrics" | grep feedback_negative)"
ok "negative feedback ratio"

# ---- no secrets in either log format ---------------------------------------
kill -TERM "$WP" "$SCHED_PID"
wait_for 20 bash -c "! kill -0 $WP 2>/dev/null && ! kill -0 $SCHED_PID 2>/dev/null" || fail "daemons did not stop"
start_scheduler --token-file "$TMP/tokens" --curve-key "$TMP/keys/sched.key" --curve-allow "$TMP/allow" \
  --log-level debug
start_worker text --providers "$TMP/providers.json" --log-level debug \
  --curve-key "$TMP/keys/worker.key" --curve-server "$TMP/keys/sched.pub"
wait_for 20 bash -c "curl -sf -H 'Authorization: Bearer $TOKEN' $API/v1/workers | grep -q w-text" \
  || fail "the text worker did not join"
R6=$(submit "$P/otel.lua" "{\"base\": \"$BASE\", \"n\": 1}")
assert_eq "$(wait_run "$R6" 90 | json_get 'j["state"]')" succeeded "a run with text logs"
SECRETS=("$TOKEN" "$TRELLIS_LLM_API_KEY")
for k in "$TMP/keys/sched.key" "$TMP/keys/worker.key"; do
  SECRETS+=("$(sed -n 's/^secret //p' "$k")")
done
for f in "$TMP/scheduler.log" "$TMP"/worker-*.log; do
  [ -s "$f" ] || fail "$f is empty"
  for s in "${SECRETS[@]}"; do
    [ -n "$s" ] || continue
    if grep -qF -- "$s" "$f"; then fail "secret found in $f"; fi
  done
done
grep -q '^{' "$TMP/worker-otel.log" && ! grep -q '^{' "$TMP/worker-text.log" || fail "log formats"
ok "no token, CURVE secret key or provider key in the JSON or text logs"
