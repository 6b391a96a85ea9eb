#!/usr/bin/env bash
# Calls from tasks to the scheduler (CALL / CALL_REPLY, docs/protocol.md):
# trellis.feedback.request_label through trellis.al, and trellis.registry
# get/register/promote/gate, checked through the HTTP API they share
# (docs/feedback.md), on the state backend under test.
source "$(dirname "$0")/cluster.sh"
P="$SRC/tests/e2e/pipelines"
start_scheduler
start_worker a --slots 2
wait_workers 1

run=$(submit "$P/loop_calls.lua" '{}')
out=$(wait_run "$run" 120)
assert_eq "$(echo "$out" | json_get 'j["state"]')" succeeded "the run succeeded"
o=$(api_get "/v1/runs/$run" | json_get 'json.dumps(j["output"])')

# ---- labels: the two most uncertain (margins 1 and 0.8), then the plain one ----
items=$(api_get "/v1/labels?pipeline=e2e-loop-calls&state=queued")
assert_eq "$(echo "$items" | json_get '[i["item"]["question"] if isinstance(i["item"], dict) else i["item"] for i in j["items"]]')" \
  '["q3", "q2", "plain"]' "al.request_top_k queued the two most uncertain, most uncertain first"
assert_eq "$(echo "$items" | json_get '[round(i["uncertainty"], 6) for i in j["items"]]')" \
  "[1.0, 0.8, 0.01]" "with their uncertainty"
assert_eq "$(echo "$items" | json_get '[i["run_id"] for i in j["items"]]')" "[\"$run\", \"$run\", \"$run\"]" \
  "each item names the run that asked"
assert_eq "$(echo "$items" | json_get '[i["task"] for i in j["items"]]')" '["label", "label", "label"]' \
  "and the task"
assert_eq "$(echo "$o" | json_get 'j["label"]["ids"]')" "$(echo "$items" | json_get '[i["item_id"] for i in j["items"][:2]]')" \
  "request_label returned the item ids the queue lists"
stats=$(api_get /v1/pipelines/e2e-loop-calls/stats)
assert_eq "$(echo "$stats" | json_get 'j["labels"]["queued"]')" 3 "the statistics count them"

# ---- registry: versions, the gate, lineage, errors, rollback ------------------
r="$(echo "$o" | json_get 'json.dumps(j["registry"])')"
assert_eq "$(echo "$r" | json_get 'j["before"]')" true "get of an alias that does not exist is nil"
assert_eq "$(echo "$r" | json_get '[g["promoted"] for g in j["gates"]]')" "[true, false, true]" \
  "the gate: v1 (no champion) promoted, v2 under the margin kept, v3 promoted"
assert_eq "$(echo "$r" | json_get 'j["gates"][1]["reason"]')" \
  "gate: mrr challenger v2 0.5050 vs champion v1 0.5000 (margin 0.01): kept the champion" \
  "a refusal says both scores"
assert_eq "$(echo "$r" | json_get 'j["production"]')" 3 "production was v3"
assert_eq "$(echo "$r" | json_get 'j["weights"]')" "[3, 6]" "get returns the artifact"
assert_eq "$(echo "$r" | json_get 'j["v2"]')" 0.505 "get by version number returns its metrics"
assert_eq "$(echo "$r" | json_get 'j["missing"]')" true "an unknown version is nil"
assert_contains "$(echo "$r" | json_get 'j["bad_ref"]')" 'takes "name@alias" or "name@version"' \
  "a reference without @ is an error"
assert_contains "$(echo "$r" | json_get 'j["bad_promote"]')" "404 not_found" \
  "promoting a version that does not exist raises with the API's code"
assert_eq "$(echo "$r" | json_get 'j["rollback_from"]')" 3 "rollback from a task"
assert_eq "$(echo "$r" | json_get 'j["lineage"]["run_id"]')" "$run" "lineage.run_id defaults to the run"
assert_eq "$(echo "$r" | json_get 'j["lineage"]["pipeline"]')" "e2e-loop-calls@1" \
  "lineage.pipeline defaults to the pipeline and its version"
assert_eq "$(echo "$r" | json_get 'j["lineage"]["data_digest"]')" "sha256:abc3" "lineage as given"
assert_eq "$(echo "$r" | json_get 'j["lineage"]["parent"]')" 2 "with its parent"

v=$(api_get /v1/models/e2e-model/versions/production)
assert_eq "$(echo "$v" | json_get 'j["version"]')" 1 "the API sees the rollback"
h=$(api_get /v1/models/e2e-model/history)
assert_eq "$(echo "$h" | json_get '[[m["from"], m["to"]] for m in j["history"]]')" \
  "[[null, 1], [1, 3], [3, 1]]" "every alias move is in the history"
assert_eq "$(echo "$h" | json_get 'j["history"][1]["reason"]')" \
  "gate: mrr challenger v3 0.6000 vs champion v1 0.5000 (margin 0.01): promoted" \
  "the gate's move records both scores"
assert_eq "$(echo "$h" | json_get 'j["history"][1]["user"]')" "task:$run/registry" \
  "and which task moved it"
assert_eq "$(api_get /v1/models/e2e-model | json_get 'j["latest_version"]')" 3 "three versions"

# ---- a call outside a task ---------------------------------------------------
cat >"$TMP/toplevel.lua" <<'LUA'
local trellis = require "trellis"
return trellis.pipeline { name = "e2e-loop-top", tasks = {
  trellis.task { name = "t", run = function(ctx)
    local co = coroutine.wrap(function() return trellis.registry.get("x@1") end)
    local ok2, err2 = pcall(co)
    return { co_error = err2 }
  end } } }
LUA
run2=$(submit "$TMP/toplevel.lua" '{}')
out=$(wait_run "$run2" 60)
assert_eq "$(echo "$out" | json_get 'j["state"]')" succeeded "the run succeeded"
o2=$(api_get "/v1/runs/$run2" | json_get 'json.dumps(j["output"]["t"])')
assert_contains "$(echo "$o2" | json_get 'j["co_error"]')" "can only be called from a task's run function" \
  "a call from a coroutine the task made is refused"
# ---- a CALL for a dispatch the worker does not hold --------------------------
assert_eq "$("$BUILD/tests/zmq_garbage" --call "tcp://127.0.0.1:$WPORT")" "reply 409" \
  "a call for a dispatch the worker does not hold is refused (409 not_current)"
assert_eq "$(api_get "/v1/labels?pipeline=e2e-loop-calls&state=all" | json_get 'len(j["items"])')" 3 \
  "and stores nothing"
ok "calls from tasks"
