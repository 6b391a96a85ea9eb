#!/usr/bin/env bash
# The web view in a real headless browser: Debian's chromium driven by
# playwright-core (fetched into the build tree by scripts/fetch-ui-test-tools.sh;
# no browser download). A scheduler with an API token, a worker and a fake LLM;
# tests/e2e/ui_check.cjs logs in with the token, starts a run, watches a node
# of the graph go running -> succeeded, opens a task's logs and LLM calls, the
# runs, workers, pipelines, feedback, labelling and model pages (labelling an
# item from the page), and fails on any console error or failed request.
# Screenshots go to build/ui-screenshots/ (docs/ui/ holds copies).
source "$(dirname "$0")/cluster.sh"
P="$SRC/tests/e2e/pipelines"
TOOLS="$BUILD/ui-tools"
SHOTS="$BUILD/ui-screenshots"
CHROMIUM="${TR_CHROMIUM:-/usr/bin/chromium}"
[ -x "$CHROMIUM" ] || fail "no chromium at $CHROMIUM (scripts/install-deps.sh installs it)"
bash "$SRC/scripts/fetch-ui-test-tools.sh" "$TOOLS" || fail "cannot fetch playwright-core"

export FAKE_LLM_KEY="sekret-test-key"
"$PY" "$SRC/tests/llm/fake_llm.py" >"$TMP/fake.port" 2>"$TMP/fake.log" &
PIDS+=("$!")
wait_for 10 test -s "$TMP/fake.port" || fail "fake LLM server did not start"
FPORT=$(head -n1 "$TMP/fake.port")
cat >"$TMP/providers.json" <<JSON
{"fake": {"kind": "openai", "base_url": "http://127.0.0.1:$FPORT/v1", "api_key_env": "FAKE_LLM_KEY",
          "default": true, "prices": {"input": 1.5, "output": 4}}}
JSON
TOKEN="ui-test-token-$RANDOM$RANDOM"
echo "$TOKEN" >"$TMP/tokens"
start_scheduler --token-file "$TMP/tokens"
AUTH=(-H "Authorization: Bearer $TOKEN")
api_get() { curl -s "${AUTH[@]}" "$API$1"; }
api_post() { curl -s "${AUTH[@]}" -X POST -H 'Content-Type: application/json' --data-binary "$2" "$API$1"; }
start_worker ui --slots 6 --providers "$TMP/providers.json"
wait_for 20 bash -c "curl -sf -H 'Authorization: Bearer $TOKEN' $API/v1/workers | grep -q w-ui" ||
  fail "the worker did not connect"

# The page is public (static files); the API behind it is not.
assert_eq "$(api_status "$API/ui/runs/x")" 200 "the app shell needs no token"
assert_eq "$(api_status "$API/v1/runs")" 401 "the API still needs the token"
assert_eq "$(api_status "$API/ui/missing.js")" 404 "an unknown file is 404"
assert_eq "$(api_status "$API/ui/pipelines/rag.v2/1.0")" 200 "a view whose address has dots"
hdrs=$(curl -s -D - -o /dev/null "$API/ui/")
assert_contains "$hdrs" "Content-Security-Policy: default-src 'none'; script-src 'self'" "a strict CSP"
etag=$(echo "$hdrs" | tr -d '\r' | sed -n 's/^ETag: //p')
assert_eq "$(api_status -H "If-None-Match: $etag" "$API/ui/")" 304 "an unchanged page is 304"

# Data for the feedback loop's pages: a registered pipeline, an earlier run
# with feedback, a queued label item and a model version.
register "$P/ui_demo.lua"
first=$(api_post /v1/runs '{"pipeline": "e2e-ui", "params": {"slow": 0}}' | json_get 'j["run_id"]')
wait_run "$first" 60 >/dev/null
api_post /v1/feedback "{\"run_id\": \"$first\", \"score\": 1, \"comment\": \"clear and right\"}" |
  grep -q feedback_id || fail "feedback"
item=$(api_post /v1/labels '{"pipeline": "e2e-ui", "item": {"question": "is the sky blue?"}, "uncertainty": 0.7}' |
  json_get 'j["item_id"]')
api_post /v1/models/ui-ranker/versions "{\"artifact\": \"s3://models/r1\", \"metrics\": {\"ndcg\": 0.81}, \"lineage\": {\"run_id\": \"$first\", \"pipeline\": \"e2e-ui@1\"}}" |
  grep -q '"version"' || fail "model version"
# Does this scheduler have the events route yet? The page polls when it has not.
events=$(api_status "${AUTH[@]}" "$API/v1/runs/$first/events")

mkdir -p "$SHOTS"
NODE_PATH="$TOOLS/node_modules" timeout 150 node "$SRC/tests/e2e/ui_check.cjs" \
  "$API" "$TOKEN" "$CHROMIUM" "$SHOTS" "$item" "$events" 2>&1 | tee "$TMP/browser.log"
[ "${PIPESTATUS[0]}" = 0 ] || fail "the browser checks failed"

# The label given on the page is stored.
labelled=$(api_get "/v1/labels?state=labelled" | json_get '[i["label"] for i in j["items"]]')
assert_contains "$labelled" "yes" "the item labelled from the page"

# The graph of a run no longer held in memory (after a restart) is read again
# from its stored source.
kill -TERM "$SCHED_PID"
wait_for 20 bash -c "! kill -0 $SCHED_PID" || fail "the scheduler did not stop"
start_scheduler --token-file "$TMP/tokens"
graph=$(api_get "/v1/runs/$first/graph")
assert_eq "$(echo "$graph" | json_get '[(t["name"], t["after"], t["map"]) for t in j["tasks"]]')" \
  '[["prepare", [], null], ["work", [], "prepare"], ["slow", ["prepare"], null], ["answer", ["work", "slow"], null]]' \
  "the graph of a run read back after a restart"
assert_eq "$(api_status "${AUTH[@]}" "$API/v1/runs/r-nope/graph")" 404 "no graph for an unknown run"
ok "web view"
