#!/usr/bin/env bash
# trellis.http and trellis.llm end to end: the real scheduler and worker
# against tests/llm/fake_llm.py. Assertions are on results and on the fake
# server's call counters, never on wall time.
source "$(dirname "$0")/cluster.sh"
P="$SRC/tests/e2e/pipelines"

# json_get with sorted keys, so that whole objects compare as text.
json_get() {
  "$PY" -c 'import json,sys
j = json.load(sys.stdin)
v = eval(sys.argv[1])
print(json.dumps(v, sort_keys=True) if not isinstance(v, str) else v)' "$1"
}

export FAKE_LLM_KEY="sekret-test-key"
"$PY" "$SRC/tests/llm/fake_llm.py" >"$TMP/fake.port" 2>"$TMP/fake.log" &
PIDS+=("$!")
wait_for 10 test -s "$TMP/fake.port" || fail "fake LLM server did not start"
FPORT=$(head -n1 "$TMP/fake.port")
BASE="http://127.0.0.1:$FPORT"
DEAD="http://127.0.0.1:$(free_port)"
cat >"$TMP/providers.json" <<JSON
{
  "fake": {"kind": "openai", "base_url": "$BASE/v1", "api_key_env": "FAKE_LLM_KEY",
           "default": true, "prices": {"input": 1.0, "output": 2.0}},
  "claude": {"kind": "anthropic", "base_url": "$BASE", "api_key_env": "FAKE_LLM_KEY",
             "models": {"ok-claude": {"prices": {"input": 3, "output": 15}}}},
  "dead": {"kind": "openai", "base_url": "$DEAD/v1", "api_key_env": "FAKE_LLM_KEY"}
}
JSON

calls() { # calls MODEL: how many calls the fake server saw for MODEL
  curl -s "$BASE/stats" | json_get "j['calls'].get('$1', 0)"
}
# run_chat PARAMS_JSON: prints the finished run's JSON
run_chat() { wait_run "$(submit "$P/llm_chat.lua" "$1")" 90; }
task_error() { api_get "/v1/runs/$1/tasks" | json_get 'j["tasks"][0]["error"]'; }

# A bad providers file stops the worker at start, naming the provider at fault.
echo '{"p1": {"kind": "openai", "base_url": "ftp://x"}}' >"$TMP/bad-providers.json"
rc=0
"$WORKER_BIN" --providers "$TMP/bad-providers.json" >"$TMP/bad.out" 2>&1 || rc=$?
assert_eq "$rc" 2 "a bad providers file stops the worker"
assert_contains "$(cat "$TMP/bad.out")" "provider 'p1' needs a base_url" "the error names the provider"
echo '{"p2": {"kind": "openai", "base_url": "http://x", "api_key": "k"}}' >"$TMP/bad-providers.json"
rc=0
"$WORKER_BIN" --providers "$TMP/bad-providers.json" >"$TMP/bad.out" 2>&1 || rc=$?
assert_contains "$(cat "$TMP/bad.out")" "keys are read from the environment only" "keys in the file are refused"

start_scheduler
start_worker llm --slots 64 --providers "$TMP/providers.json"
WPIDS=("$WPID")
wait_workers 1

# ---- chat ------------------------------------------------------------------
out=$(run_chat '{"text": "hello there", "model": "ok"}')
assert_eq "$(echo "$out" | json_get 'j["state"]')" succeeded "chat succeeds"
assert_eq "$(echo "$out" | json_get 'j["output"]["chat"]["text"]')" "echo: hello there" "chat text"
assert_eq "$(echo "$out" | json_get 'j["output"]["chat"]["provider"]')" fake "default provider"
assert_eq "$(echo "$out" | json_get 'j["output"]["chat"]["usage"]')" \
  '{"completion_tokens": 3, "prompt_tokens": 4}' "token usage from the server"
assert_eq "$(echo "$out" | json_get 'j["output"]["chat"]["cost"]')" 1e-05 "cost from prices (4*1 + 3*2 per million)"
assert_eq "$(echo "$out" | json_get 'j["output"]["chat"]["cached"]')" false "not cached"

out=$(run_chat '{"model": "format", "response_format": {"type": "json_object"}}')
assert_eq "$(echo "$out" | json_get 'json.loads(j["output"]["chat"]["text"])["response_format"]')" \
  '{"type": "json_object"}' "response_format reaches the provider unchanged (JSON mode)"
out=$(run_chat '{"text": "hi claude", "model": "ok-claude"}')
assert_eq "$(echo "$out" | json_get 'j["output"]["chat"]["text"]')" "echo: hi claude" "anthropic chat (provider found by model)"
assert_eq "$(echo "$out" | json_get 'j["output"]["chat"]["provider"]')" claude "anthropic provider"
assert_eq "$(echo "$out" | json_get 'j["output"]["chat"]["usage"]["prompt_tokens"]')" 2 "anthropic usage (system prompt sent apart)"

# ---- retries -----------------------------------------------------------------
out=$(run_chat '{"model": "ratelimit-2-a", "backoff": 0.01}')
assert_eq "$(echo "$out" | json_get 'j["output"]["chat"]["text"]')" "echo: hello there" "429 twice, then the answer"
assert_eq "$(calls ratelimit-2-a)" 3 "three calls: two refused with Retry-After, one answered"
assert_contains "$(api_get "/v1/runs/$(echo "$out" | json_get 'j["run_id"]')/logs?task=chat")" latency_ms "task logged"
out=$(run_chat '{"model": "ratedate-1-a", "backoff": 0.01}')
assert_eq "$(echo "$out" | json_get 'j["state"]')" succeeded "Retry-After as an HTTP date"
assert_eq "$(calls ratedate-1-a)" 2 "one refusal, one answer"
out=$(run_chat '{"model": "ratelimit-9-b", "retries": 1, "backoff": 0.01}')
assert_eq "$(echo "$out" | json_get 'j["state"]')" failed "rate limited past the retries"
id=$(echo "$out" | json_get 'j["run_id"]')
assert_contains "$(task_error "$id")" "llm_rate_limited: provider 'fake' answered 429" "llm_rate_limited code"
assert_eq "$(calls ratelimit-9-b)" 2 "retries = 1: two calls"
out=$(run_chat '{"model": "fail500-1-a", "backoff": 0.01}')
assert_eq "$(echo "$out" | json_get 'j["output"]["chat"]["text"]')" "echo: hello there" "500 then success"
assert_eq "$(calls fail500-1-a)" 2 "two calls for 500 then success"
out=$(run_chat '{"model": "malformed-a", "retries": 2, "backoff": 0.01}')
id=$(echo "$out" | json_get 'j["run_id"]')
assert_eq "$(echo "$out" | json_get 'j["state"]')" failed "malformed JSON fails"
assert_contains "$(task_error "$id")" "llm_bad_response: provider 'fake' sent malformed JSON" "llm_bad_response code"
assert_eq "$(calls malformed-a)" 3 "malformed answers are retried (retries = 2)"
out=$(run_chat '{"model": "badreq-a", "backoff": 0.01}')
assert_contains "$(task_error "$(echo "$out" | json_get 'j["run_id"]')")" "llm_bad_request" "400 is not retried"
assert_eq "$(calls badreq-a)" 1 "one call for a 400"

# ---- fallback ----------------------------------------------------------------
out=$(run_chat '{"provider": "dead", "model": "ok-fb", "retries": 1, "backoff": 0.01, "fallback": [{"provider": "fake", "model": "ok-fb2"}]}')
assert_eq "$(echo "$out" | json_get 'j["output"]["chat"]["provider"]')" fake "fallback to the second provider"
assert_eq "$(echo "$out" | json_get 'j["output"]["chat"]["model"]')" ok-fb2 "with its model"
out=$(run_chat '{"model": "fail500-9-c", "retries": 0, "fallback": [{"provider": "claude", "model": "ok-claude"}]}')
assert_eq "$(echo "$out" | json_get 'j["output"]["chat"]["provider"]')" claude "500 falls back to anthropic"
assert_eq "$(calls fail500-9-c)" 1 "primary called once (retries = 0)"

# ---- streaming ---------------------------------------------------------------
out=$(run_chat '{"text": "stream me please", "model": "ok-stream", "stream": true}')
assert_eq "$(echo "$out" | json_get 'j["output"]["chat"]["text"]')" "echo: stream me please" "stream assembled"
assert_eq "$(echo "$out" | json_get 'j["output"]["chat"]["usage"]["completion_tokens"]')" 4 "stream usage chunk"
out=$(run_chat '{"text": "stream me please", "model": "ok-claude", "stream": true}')
assert_eq "$(echo "$out" | json_get 'j["output"]["chat"]["text"]')" "echo: stream me please" "anthropic stream assembled"
out=$(run_chat '{"text": "a b c d e f", "model": "cut-1-a", "stream": true, "backoff": 0.01}')
assert_eq "$(echo "$out" | json_get 'j["output"]["chat"]["text"]')" "echo: a b c d e f" "cut stream retried"
assert_eq "$(calls cut-1-a)" 2 "cut once, then whole"
out=$(run_chat '{"text": "a b c", "model": "cut-9-b", "stream": true, "retries": 1, "backoff": 0.01}')
assert_contains "$(task_error "$(echo "$out" | json_get 'j["run_id"]')")" "llm_bad_response" "a stream always cut is llm_bad_response"
out=$(run_chat '{"text": "one two three four", "model": "drip-50-a", "stream": true}')
assert_eq "$(echo "$out" | json_get 'j["output"]["chat"]["text"]')" "echo: one two three four" "slow drip stream"

# ---- deadline ----------------------------------------------------------------
out=$(run_chat '{"model": "latency-3000-a", "deadline": 0.5}')
assert_contains "$(task_error "$(echo "$out" | json_get 'j["run_id"]')")" "llm_timeout" "deadline gives llm_timeout"
out=$(run_chat '{"model": "ratelimit-9-d", "deadline": 0.5, "backoff": 0.01}')
assert_contains "$(task_error "$(echo "$out" | json_get 'j["run_id"]')")" "would pass the deadline" "a Retry-After past the deadline is not waited"
assert_eq "$(calls ratelimit-9-d)" 1 "one call before giving up"

# ---- embeddings, extractive, cache -------------------------------------------
out=$(wait_run "$(submit "$P/llm_embed.lua" '{"model": "emb"}')")
assert_eq "$(echo "$out" | json_get 'j["output"]["embed"]')" \
  '{"differs": true, "dim": 8, "n": 3, "provider": "fake", "same": true, "tokens": 5}' "embeddings ordered by index"
out=$(wait_run "$(submit "$P/llm_embed.lua" '{"provider": "claude", "model": "ok-claude"}')")
assert_contains "$(task_error "$(echo "$out" | json_get 'j["run_id"]')")" "llm_bad_request: provider 'claude' (anthropic) has no embeddings" "no embeddings on anthropic"
out=$(wait_run "$(submit "$P/llm_embed.lua" '{"provider": "extractive"}')")
assert_eq "$(echo "$out" | json_get 'j["output"]["embed"]["dim"]')" 256 "extractive hashed embeddings"
out=$(run_chat '{"provider": "extractive", "text": "Where is the Eiffel tower?", "context": [{"text": "Bananas are yellow. The Eiffel tower is in Paris.", "source": "doc1"}, {"text": "Paris is the capital of France.", "source": "doc2"}]}')
text=$(echo "$out" | json_get 'j["output"]["chat"]["text"]')
assert_contains "$text" "extractive" "extractive says so"
assert_contains "$text" "The Eiffel tower is in Paris. [doc1]" "top sentence with its source"
assert_eq "$(echo "$out" | json_get 'j["output"]["chat"]["sources"][0]["source"]')" doc1 "sources listed"
assert_eq "$(echo "$out" | json_get 'j["output"]["chat"]["model"]')" extractive "model extractive"
before=$(calls ok-cache)
out=$(wait_run "$(submit "$P/llm_cache.lua")")
assert_eq "$(echo "$out" | json_get 'j["output"]["twice"]')" \
  '{"first": false, "same": true, "second": true, "text": "echo: same question", "third": false, "tokens": 3}' "second identical call cached"
assert_eq "$(( $(calls ok-cache) - before ))" 2 "the cached call never reached the server"

# ---- http --------------------------------------------------------------------
http_run() { wait_run "$(submit "$P/llm_http.lua" "{\"mode\": \"$1\", \"base\": \"$BASE\", \"dead\": \"$DEAD\"}")"; }
out=$(http_run get)
assert_eq "$(echo "$out" | json_get 'j["output"]["http"]')" '{"echo": "yes", "has_header": true, "method": "GET", "status": 200}' "GET with headers"
out=$(http_run post)
assert_eq "$(echo "$out" | json_get 'j["output"]["http"]')" '{"has_body": true, "has_n": true, "method": "POST", "status": 200}' "POST with a body"
out=$(http_run status)
assert_eq "$(echo "$out" | json_get 'j["output"]["http"]')" 503 "a 503 is a response, not an error"
out=$(http_run redirect)
assert_eq "$(echo "$out" | json_get 'j["output"]["http"]')" '[302, 200]' "redirects followed only when asked"
out=$(http_run big)
id=$(echo "$out" | json_get 'j["run_id"]')
assert_contains "$(task_error "$id")" "http_error: response from 'http://127.0.0.1:$FPORT' larger than 1000 bytes" "response over the limit refused"
out=$(http_run timeout)
assert_contains "$(task_error "$(echo "$out" | json_get 'j["run_id"]')")" "http_timeout" "http timeout"
out=$(http_run nested)
assert_contains "$(task_error "$(echo "$out" | json_get 'j["run_id"]')")" "http_error: trellis.http.request can only be called from a task's run function" "no wait inside a nested coroutine"
out=$(http_run refused)
assert_contains "$(task_error "$(echo "$out" | json_get 'j["run_id"]')")" "http_error: " "connection refused is http_error"
conns=$(curl -s "$BASE/stats" | json_get 'j["connections"]')
out=$(http_run many)
assert_eq "$(echo "$out" | json_get 'j["output"]["http"]')" 20 "twenty requests in a row"
# At most one new connection for the twenty, plus the two /stats calls.
conns=$(( $(curl -s "$BASE/stats" | json_get 'j["connections"]') - conns ))
[ "$conns" -le 2 ] || fail "connections not reused: $conns new connections for 20 requests"
ok "connections reused ($conns new, /stats included)"

# ---- configuration by the environment alone, and none --------------------------
TRELLIS_LLM_BASE_URL="$BASE/v1" TRELLIS_LLM_MODEL=ok-env TRELLIS_LLM_API_KEY="$FAKE_LLM_KEY" \
  start_worker env --pool llmenv
WPIDS+=("$WPID")
env -u FAKE_LLM_KEY "$WORKER_BIN" --scheduler "tcp://127.0.0.1:$WPORT" --id w-bare --pool bare \
  >>"$TMP/worker-bare.log" 2>&1 &
PIDS+=("$!")
WPIDS+=("$!")
wait_workers 3
out=$(wait_run "$(submit "$P/llm_pools.lua")")
assert_eq "$(echo "$out" | json_get 'j["output"]["env"]')" \
  '{"model": "ok-env", "provider": "default", "text": "echo: via env"}' "TRELLIS_LLM_* configure a provider"
assert_eq "$(echo "$out" | json_get 'j["output"]["bare"]')" \
  '{"embed": "extractive", "provider": "extractive", "providers": true, "text": "extractive answer (no language model configured):\n- Trellis pipelines run tasks. [notes]"}' \
  "without configuration the extractive provider answers"
assert_eq "$(calls ok-env)" 1 "the env provider reached the server"

# ---- stopping a task that waits on a request ------------------------------
out=$(wait_run "$(submit "$P/llm_stop.lua" "{\"base\": \"$BASE\"}")" 30)
assert_contains "$(task_error "$(echo "$out" | json_get 'j["run_id"]')")" "timed out" "task timeout stops a pending request"
id=$(submit "$P/llm_http.lua" "{\"mode\": \"hang\", \"base\": \"$BASE\"}")
wait_for 20 bash -c "curl -s $API/v1/runs/$id | $PY -c 'import json,sys; sys.exit(0 if json.load(sys.stdin)[\"tasks\"][\"running\"] > 0 else 1)'" \
  || fail "the hanging request never started"
assert_eq "$(api_post "/v1/runs/$id/cancel" '{}' | json_get 'j["state"]')" cancelled "cancel a task waiting on a request"
out=$(wait_run "$id" 10)
assert_eq "$(echo "$out" | json_get 'j["tasks"]["cancelled"]')" 1 "its task is cancelled"
out=$(http_run get)
assert_eq "$(echo "$out" | json_get 'j["output"]["http"]["status"]')" 200 "the worker serves requests after"

# ---- fan-out: many calls in flight on one worker ----------------------------
out=$(wait_run "$(submit "$P/llm_fanout.lua" '{"n": 200, "model": "latency-200-f"}')" 120)
assert_eq "$(echo "$out" | json_get 'j["output"]["count"]')" 200 "200 concurrent calls answered"
assert_eq "$(calls latency-200-f)" 200 "each reached the server once"

# ---- usage travels in RESULT (seen by tests/e2e/fake_scheduler) -------------
cat >"$TMP/usage.script" <<SCRIPT
expect HELLO 20
pipeline chat $P/llm_chat.lua
pipeline cache $P/llm_cache.lua
task 1 chat chat params={"model":"ok-usage","text":"count_these_words"}
task 2 cache twice params={"model":"ok-usage2"}
wait-results 60 1 2
SCRIPT
"$BUILD/tests/fake_scheduler" "$TMP/usage.script" >"$TMP/usage.jsonl" 2>"$TMP/usage-fake.log" &
FPID=$!
PIDS+=("$FPID")
wait_for 10 grep -q '"PORT"' "$TMP/usage.jsonl" || fail "fake scheduler did not start"
UPORT="$(sed -n 's/.*"port":\([0-9]*\).*/\1/p' "$TMP/usage.jsonl" | head -n 1)"
"$WORKER_BIN" --scheduler "tcp://127.0.0.1:$UPORT" --id w-usage --heartbeat-ms 200 \
  --providers "$TMP/providers.json" >>"$TMP/worker-usage.log" 2>&1 &
UWPID=$!
PIDS+=("$UWPID")
wait_for 60 bash -c "! kill -0 $FPID" || fail "fake scheduler did not get both results"
"$PY" - "$TMP/usage.jsonl" <<'PYEOF' || fail "usage in RESULT"
import json, sys
R = {m["id"]: m for m in map(json.loads, open(sys.argv[1])) if m["type"] == "RESULT"}
u = R[1]["usage"]
assert len(u) == 1, u
u = u[0]
assert (u["provider"], u["model"], u["prompt_tokens"], u["completion_tokens"]) == \
    ("fake", "ok-usage", 3, 2), u
assert abs(u["cost"] - (3 * 1.0 + 2 * 2.0) / 1e6) < 1e-12 and u["cached"] is False, u
assert len(u["prompt_digest"]) == 64 and u["latency_ms"] >= 0, u
c = R[2]["usage"]
assert [x["cached"] for x in c] == [False, True, False], c
assert c[1]["cost"] == 0 and c[0]["prompt_digest"] == c[1]["prompt_digest"], c
PYEOF
ok "usage list in RESULT: one entry per call, cache hits marked and free"
kill -TERM "$UWPID"
wait_for 20 bash -c "! kill -0 $UWPID" || fail "worker did not stop"

# ---- no secrets in logs ------------------------------------------------------
if grep -q "$FAKE_LLM_KEY" "$TMP"/*.log; then fail "the API key appears in a log"; fi
ok "the API key is in no log"
for p in "${WPIDS[@]}"; do
  kill -TERM "$p"
  wait_for 20 bash -c "! kill -0 $p" || fail "worker $p did not stop on SIGTERM"
done
if grep -E -q 'AddressSanitizer|LeakSanitizer|runtime error:' "$TMP"/worker-*.log; then
  fail "sanitizer report in a worker log"
fi
ok "workers stopped without sanitizer reports"
echo "1 passed, 0 failed"
