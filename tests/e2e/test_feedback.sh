#!/usr/bin/env bash
# The feedback loop's API and CLI (docs/feedback.md) on the state backend
# under test (SQLite, or etcd with TR_E2E_STATE=etcd): feedback and its
# statistics, bad input and its codes (nothing stored half), the labelling
# queue, the model registry with a rollback, the chat-jsonl export, and
# durability: a scheduler killed with -9 right after its answers keeps them.
source "$(dirname "$0")/cluster.sh"
P="$SRC/tests/e2e/pipelines"
CLI="$BUILD/cli/trellis"
start_scheduler
start_worker a --slots 2
wait_workers 1

r1=$(submit "$P/answer.lua" '{"question": "What is the capital of France?"}')
r2=$(submit "$P/answer.lua" '{"question": "Who wrote Hamlet?"}')
wait_run "$r1" 60 >/dev/null
wait_run "$r2" 60 >/dev/null

# ---- feedback and statistics ------------------------------------------------
code_of() { # METHOD PATH BODY: "STATUS CODE"
  local out status
  out=$(curl -s -w '\n%{http_code}' -X "$1" -H 'Content-Type: application/json' \
    --data-binary "$3" "$API$2")
  status=${out##*$'\n'}
  echo "$status $(echo "${out%$'\n'*}" | json_get 'j.get("error", {}).get("code", "")' 2>/dev/null)"
}
post_fb() { api_post /v1/feedback "$1" | json_get 'j["feedback_id"]'; }
post_fb "{\"run_id\": \"$r1\", \"score\": -1, \"correction\": \"Paris\", \"user\": \"ann\"}" >/dev/null
post_fb "{\"run_id\": \"$r1\", \"score\": 1}" >/dev/null
post_fb "{\"run_id\": \"$r2\", \"score\": 5, \"task\": \"answer\", \"comment\": \"spot on\"}" >/dev/null
post_fb "{\"run_id\": \"$r2\", \"score\": 2}" >/dev/null
fid=$("$CLI" --api "$API" feedback "$r2" --score 4 --comment "good" --user bob)
case "$fid" in fb-*) ok "trellis feedback prints the new feedback id" ;; *) fail "trellis feedback: $fid" ;; esac

out=$(api_get "/v1/feedback?pipeline=e2e-answer")
assert_eq "$(echo "$out" | json_get 'len(j["feedback"])')" 5 "five pieces of feedback listed"
assert_eq "$(echo "$out" | json_get 'j["feedback"][0]["feedback_id"]')" "$fid" "newest first"
assert_eq "$(echo "$out" | json_get 'j["feedback"][0]["user"]')" bob "with who gave it"
out=$(api_get "/v1/feedback?run_id=$r1&limit=1")
assert_eq "$(echo "$out" | json_get '[f["score"] for f in j["feedback"]]')" "[1]" "filtered by run, limited"

stats=$(api_get /v1/pipelines/e2e-answer/stats)
# Scores -1, 1, 5, 2, 4: mean 2.2; negative: -1 and 2 stars, 2 of 5.
assert_eq "$(echo "$stats" | json_get 'j["feedback"]["count"]')" 5 "stats: count"
assert_eq "$(echo "$stats" | json_get 'round(j["feedback"]["mean_score"], 6)')" 2.2 "stats: mean score"
assert_eq "$(echo "$stats" | json_get 'round(j["feedback"]["negative_rate"], 6)')" 0.4 "stats: negative rate"
assert_eq "$(echo "$stats" | json_get 'j["feedback"]["window"]["count"]')" 5 "stats: the window holds the last hour's feedback"
assert_eq "$(echo "$stats" | json_get 'j["feedback"]["window"]["seconds"]')" 3600 "stats: the window is an hour"
assert_eq "$(api_get /v1/pipelines/never-rated/stats | json_get 'j["feedback"]["count"]')" 0 \
  "stats of a pipeline without feedback are zeros"

# ---- bad input: a clear code, nothing stored ---------------------------------
assert_eq "$(code_of POST /v1/feedback "{\"run_id\": \"$r1\", \"score\": 7}")" "400 invalid_score" "score 7"
assert_eq "$(code_of POST /v1/feedback "{\"run_id\": \"$r1\", \"score\": 0}")" "400 invalid_score" "score 0"
assert_eq "$(code_of POST /v1/feedback "{\"run_id\": \"$r1\", \"score\": 2.5}")" "400 invalid_score" "score 2.5"
assert_eq "$(code_of POST /v1/feedback "{\"run_id\": \"$r1\", \"score\": \"5\"}")" "400 invalid_score" "score as a string"
assert_eq "$(code_of POST /v1/feedback "{\"run_id\": \"$r1\"}")" "400 invalid_score" "no score"
assert_eq "$(code_of POST /v1/feedback "{\"run_id\": \"$r1\", \"score\": -1, \"scale\": \"stars\"}")" \
  "400 invalid_score" "-1 on the stars scale"
assert_eq "$(code_of POST /v1/feedback '{"run_id": "r-nope", "score": 1}')" "404 not_found" "unknown run"
assert_eq "$(code_of POST /v1/feedback '{"score": 1}')" "400 invalid_argument" "no run_id"
assert_eq "$(code_of POST /v1/feedback '{"run_id": ')" "400 malformed_json" "malformed JSON"
big=$("$PY" -c 'print("x" * (64 * 1024 + 1))')
assert_eq "$(code_of POST /v1/feedback "{\"run_id\": \"$r1\", \"score\": 1, \"comment\": \"$big\"}")" \
  "400 too_large" "a comment over 64 KiB"
assert_eq "$(api_get /v1/pipelines/e2e-answer/stats | json_get 'j["feedback"]["count"]')" 5 \
  "refused feedback changed nothing"
assert_eq "$(api_get "/v1/feedback?pipeline=e2e-answer" | json_get 'len(j["feedback"])')" 5 \
  "and stored nothing"
"$CLI" --api "$API" feedback "$r1" --score 9 2>"$TMP/cli-err.txt" && fail "the CLI took score 9"
assert_contains "$(cat "$TMP/cli-err.txt")" "must be -1 or 1 (thumbs) or 1..5 (stars)" "the CLI shows why a score is refused"

# ---- the labelling queue -----------------------------------------------------
label_post() { api_post /v1/labels "$1" | json_get 'j["item_id"]'; }
l_low=$(label_post "{\"run_id\": \"$r1\", \"task\": \"answer\", \"item\": {\"q\": \"low\"}, \"uncertainty\": 0.1}")
l_high=$(label_post '{"pipeline": "e2e-answer", "item": {"q": "high"}, "uncertainty": 0.95}')
l_mid=$(label_post "{\"run_id\": \"$r2\", \"item\": \"mid\", \"uncertainty\": 0.5}")
out=$(api_get "/v1/labels?pipeline=e2e-answer&state=queued")
assert_eq "$(echo "$out" | json_get '[i["item_id"] for i in j["items"]]')" \
  "[\"$l_high\", \"$l_mid\", \"$l_low\"]" "the queue is most uncertain first"
assert_eq "$(code_of POST /v1/labels '{"pipeline": "e2e-answer", "item": 1}')" "400 invalid_argument" \
  "an item without uncertainty"
assert_eq "$(code_of POST /v1/labels '{"run_id": "r-nope", "item": 1, "uncertainty": 1}')" \
  "404 not_found" "an item of an unknown run"
"$CLI" --api "$API" label "$l_high" '{"relevant": true}' --user carol >/dev/null || fail "trellis label failed"
assert_eq "$(code_of POST "/v1/labels/$l_high" '{"label": false}')" "409 conflict" "a label given twice"
assert_eq "$(code_of POST /v1/labels/lb-nope '{"label": 1}')" "404 not_found" "an unknown item"
assert_eq "$(code_of POST "/v1/labels/$l_mid" '{}')" "400 invalid_argument" "a label without a value"
out=$(api_get "/v1/labels?state=labelled")
assert_eq "$(echo "$out" | json_get '[(i["item_id"], i["label"], i["user"]) for i in j["items"]]')" \
  "[[\"$l_high\", {\"relevant\": true}, \"carol\"]]" "the labelled item keeps its label and labeller"
cli_out=$("$CLI" --api "$API" labels --pipeline e2e-answer)
assert_eq "$(echo "$cli_out" | awk 'NR > 1 { print $1 }' | tr '\n' ' ')" "$l_mid $l_low " \
  "trellis labels shows what is still queued, most uncertain first"
stats=$(api_get /v1/pipelines/e2e-answer/stats)
assert_eq "$(echo "$stats" | json_get '[j["labels"]["queued"], j["labels"]["labelled"]]')" "[2, 1]" \
  "stats count the queue"

# ---- the model registry --------------------------------------------------------
reg() { api_post /v1/models/reranker/versions "$1" | json_get 'j["version"]'; }
v1=$(reg "{\"artifact\": \"file:///models/rr-1.json\", \"metrics\": {\"mrr\": 0.41},
           \"lineage\": {\"run_id\": \"$r1\", \"data_digest\": \"sha256:aaaa\", \"pipeline\": \"retrain@1\"},
           \"tags\": {\"kind\": \"logreg\"}}")
v2=$(reg '{"artifact": {"weights": [0.5, -1.25]}, "metrics": {"mrr": 0.47}, "lineage": {"parent": 1}}')
assert_eq "$v1 $v2" "1 2" "versions count from 1"
# Over what one argument may hold (128 KiB): curl reads it from a file.
"$PY" -c 'import json; print(json.dumps({"artifact": {"w": "x" * (256 * 1024)}}))' >"$TMP/huge.json"
assert_eq "$(code_of POST /v1/models/reranker/versions "@$TMP/huge.json")" "400 too_large" \
  "an inline artifact over 256 KiB"
assert_eq "$(code_of POST /v1/models/reranker/versions '{"artifact": "a", "lineage": {"parent": 9}}')" \
  "404 not_found" "a parent that does not exist"
v3=$(reg '{"artifact": "file:///models/rr-3.json", "metrics": {"mrr": 0.52}, "lineage": {"parent": 2}}')
assert_eq "$v3" 3 "refused versions took no number"
assert_eq "$(code_of PUT /v1/models/reranker/aliases/production '{"version": 1, "reason": "first"}' | cut -d' ' -f1)" \
  200 "production -> 1"
"$CLI" --api "$API" models promote reranker production 3 --reason "mrr 0.52 > 0.41" --user dan >/dev/null \
  || fail "trellis models promote failed"
assert_eq "$(api_get /v1/models/reranker/versions/production | json_get 'j["version"]')" 3 \
  "production resolves to version 3"
# Rollback: production moves back to 1.
assert_eq "$(code_of PUT /v1/models/reranker/aliases/production '{"version": 1, "reason": "rollback"}' | cut -d' ' -f1)" \
  200 "rollback: production -> 1"
assert_eq "$(api_get /v1/models/reranker/versions/production | json_get '[j["version"], j["lineage"]["data_digest"]]')" \
  '[1, "sha256:aaaa"]' "production is version 1 again, with its lineage"
assert_eq "$(code_of PUT /v1/models/reranker/aliases/challenger '{"version": 2}' | cut -d' ' -f1)" 200 "challenger -> 2"
assert_eq "$(code_of DELETE /v1/models/reranker/aliases/challenger '' | cut -d' ' -f1)" 200 "challenger removed"
assert_eq "$(code_of DELETE /v1/models/reranker/aliases/challenger '')" "404 not_found" "a removed alias is unknown"
assert_eq "$(code_of PUT /v1/models/reranker/aliases/production '{"version": 9}')" "404 not_found" \
  "an alias to an unknown version"
assert_eq "$(code_of PUT /v1/models/nomodel/aliases/production '{"version": 1}')" "404 not_found" \
  "an alias of an unknown model"
assert_eq "$(code_of GET /v1/models/nomodel '')" "404 not_found" "an unknown model"
assert_eq "$(code_of GET /v1/models/reranker/versions/7 '')" "404 not_found" "an unknown version"
assert_eq "$(code_of GET /v1/models/reranker/versions/staging '')" "404 not_found" "an unknown alias"
hist=$(api_get /v1/models/reranker/history)
assert_eq "$(echo "$hist" | json_get '[(h["alias"], h["from"], h["to"]) for h in j["history"]]')" \
  '[["production", null, 1], ["production", 1, 3], ["production", 3, 1], ["challenger", null, 2], ["challenger", 2, null]]' \
  "the history holds every move, oldest first"
assert_eq "$(echo "$hist" | json_get '[j["history"][1]["user"], j["history"][1]["reason"]]')" \
  '["dan", "mrr 0.52 > 0.41"]' "with who moved it and why"
model=$(api_get /v1/models/reranker)
assert_eq "$(echo "$model" | json_get '[j["latest_version"], j["aliases"], [v["version"] for v in j["versions"]]]')" \
  '[3, {"production": 1}, [1, 2, 3]]' "a model lists its versions and aliases"
assert_eq "$(echo "$model" | json_get 'j["versions"][1]["artifact"]')" '{"weights": [0.5, -1.25]}' "an inline artifact"
assert_contains "$("$CLI" --api "$API" models)" "production=1" "trellis models shows the aliases"

# ---- export ------------------------------------------------------------------------
"$CLI" --api "$API" feedback export --format chat-jsonl >"$TMP/export.jsonl" 2>"$TMP/export.err"
assert_eq "$(cat "$TMP/export.jsonl")" \
  '{"messages":[{"role":"user","content":"What is the capital of France?"},{"role":"assistant","content":"Paris"}]}' \
  "the export pairs the run's question with the correction"

# ---- durability: kill -9 right after the answers --------------------------------------
last=$(post_fb "{\"run_id\": \"$r2\", \"score\": -1, \"comment\": \"after this, kill -9\"}")
v4=$(reg '{"artifact": "file:///models/rr-4.json"}')
code_of PUT /v1/models/reranker/aliases/production '{"version": 4, "reason": "just before the kill"}' >/dev/null
kill -9 "$SCHED_PID"
wait "$SCHED_PID" 2>/dev/null || true
ok "killed the scheduler with -9 right after its answers"
start_scheduler
# With etcd the new process leads once the killed one's lease runs out.
wait_for 60 curl -sf "$API/readyz" || fail "the restarted scheduler did not lead"
assert_eq "$(api_get "/v1/feedback?limit=1" | json_get 'j["feedback"][0]["feedback_id"]')" "$last" \
  "the last feedback answered is there after the restart"
assert_eq "$(api_get /v1/pipelines/e2e-answer/stats | json_get '[j["feedback"]["count"], j["labels"]["queued"]]')" \
  "[6, 2]" "and so are its statistics"
assert_eq "$(api_get /v1/models/reranker/versions/production | json_get 'j["version"]')" "$v4" \
  "and the last alias move"
# The runs are not in the new process's memory: read from the state once, then remembered.
post_fb "{\"run_id\": \"$r1\", \"score\": 3}" >/dev/null
post_fb "{\"run_id\": \"$r1\", \"score\": 5}" >/dev/null
assert_eq "$(api_get /v1/pipelines/e2e-answer/stats | json_get 'j["feedback"]["count"]')" 8 \
  "feedback on runs known only to the state"
v5=$(reg '{"artifact": "file:///models/rr-5.json"}')
assert_eq "$v5" 5 "versions go on counting after the restart"
for q in "limit=0x10" "limit=%2B5" "limit=1e2" "limit=0"; do
  assert_eq "$(api_status "$API/v1/feedback?$q")" 400 "feedback $q is refused"
done
big=$("$PY" -c 'import json; print(json.dumps({"run_id": "x", "score": 1, "correction": [0] * 100001}))')
assert_eq "$(curl -s -o /dev/null -w '%{http_code}' -X POST --data-binary @- "$API/v1/feedback" <<<"$big")" 400 "a body of 100,001 values is refused"
echo "1 passed, 0 failed"
