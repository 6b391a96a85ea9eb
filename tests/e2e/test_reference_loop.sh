#!/usr/bin/env bash
# The reference feedback loop end to end (docs/reference-pipelines.md, "The
# feedback loop"), offline, through the real scheduler and two workers:
# docs/ indexed with vectors; rag_eval.lua on the held-out questions of
# lua-pipelines/data/loop_heldout.jsonl (before: no reranker exists);
# rag_answer.lua answers the training questions and queues its 20 least sure
# retrievals for labelling; scripts/loop_feedback.py plays the people (rates
# each answer and labels the queued items from the labelled set, a stand-in)
# and exports the training set from the API; the feedback crosses the
# trigger of rag_answer.lua (200 ratings in the window, more than 10 % thumbs
# down), which starts retrain_reranker.lua: it reads the feedback and labels
# the trigger fired on, trains, evaluates, registers and promotes through the
# gate; rag_eval.lua again (after: the promoted reranker ranks the passages).
#
# The held-out figures are asserted above a margin the run really gives:
# measured when this test was written (173 held-out questions, k = 5, file
# level, the trigger firing at 200 ratings): MRR 0.821 before, 0.905 after (+0.084); recall@5 0.936 before,
# 0.994 after (docs/reference-pipelines.md). The test asks for MRR +0.03 and recall@5 not lower: the
# ranking is deterministic for a given docs/, and the margin absorbs edits of
# docs/ that move a passage or two.
HB_MS="${HB_MS:-1000}"
source "$(dirname "$0")/cluster.sh"
LP="$SRC/lua-pipelines"
DOCS="$SRC/docs"
MRR_GAIN=0.03

unset TRELLIS_LLM_BASE_URL TRELLIS_LLM_API_KEY TRELLIS_LLM_MODEL TRELLIS_LLM_PROVIDER \
  TRELLIS_LLM_KIND TRELLIS_PROVIDERS
export TRELLIS_DATA_DIR="$TMP/data"
export TRELLIS_INGEST_ROOTS="$DOCS:$LP/data"
mkdir -p "$TRELLIS_DATA_DIR"

start_scheduler
# The trigger's run takes retrain_reranker's default held-out file, a path
# relative to the repository: the workers run there.
cd "$SRC"
start_worker a --slots 4
start_worker b --slots 4
wait_workers 2
export TRELLIS_API="$API"

succeeded() {
  local state
  state=$(echo "$1" | json_get 'j["state"]')
  [ "$state" = succeeded ] || fail "$2: run $state: $(api_get "/v1/runs/$(echo "$1" | json_get 'j["run_id"]')/tasks" \
    | json_get '[(t["name"], t["index"], t["error"]) for t in j["tasks"] if t["error"]]')"
  ok "$2"
}

out=$(wait_run "$(submit "$LP/ingest_docs.lua" "{\"folder\": \"$DOCS\", \"embed\": true}")" 240)
succeeded "$out" "ingest_docs with vectors"

eval_heldout() {
  wait_run "$(submit "$LP/rag_eval.lua" "{\"questions\": \"$LP/data/loop_heldout.jsonl\"}")" 600
}
before=$(eval_heldout)
succeeded "$before" "rag_eval on the held-out questions, before"
assert_eq "$(echo "$before" | json_get 'j["output"]["report"]["retrieval"]')" hybrid \
  "before: no reranker exists, hybrid retrieval"

qs=$("$PY" -c 'import json,sys
print(json.dumps([json.loads(l)["question"] for l in open(sys.argv[1]) if l.strip()]))' "$LP/data/loop_train.jsonl")
# Registered, so that its trigger exists; the trigger's run must be first.
register "$LP/retrain_reranker.lua"
register "$LP/rag_answer.lua"
assert_eq "$(api_get '/v1/triggers?pipeline=rag_answer' | json_get '[(t["name"], t["run"], t["state"]) for t in j["triggers"]]')" \
  '[["retrain", "retrain_reranker", "armed"]]' "rag_answer's trigger is registered"
body=$("$PY" -c 'import json,sys; print(json.dumps({"pipeline": "rag_answer",
  "params": {"questions": json.loads(sys.argv[1]), "request_labels": 20}}))' "$qs")
answers=$(wait_run "$(api_post /v1/runs "$body" | json_get 'j["run_id"]')" 900)
succeeded "$answers" "rag_answer on the training questions"
arun=$(echo "$answers" | json_get 'j["run_id"]')
assert_eq "$(echo "$answers" | json_get 'j["output"]["label_uncertain"]["requested"]')" 20 \
  "the 20 least sure retrievals went to the labelling queue"
assert_eq "$(api_get '/v1/labels?pipeline=rag_answer&state=queued' | json_get 'len(j["items"])')" 20 \
  "the queue holds them"

rated=$("$PY" "$SRC/scripts/loop_feedback.py" rate "$arun" "$LP/data/loop_train.jsonl")
assert_contains "$rated" "20 queued items labelled" "the stand-in labelled the queue"
n_fb=$(echo "$qs" | json_get 'len(j)')
assert_eq "$(api_get /v1/pipelines/rag_answer/stats | json_get 'j["feedback"]["count"]')" "$n_fb" \
  "one piece of feedback per answer"
assert_eq "$(api_get /v1/pipelines/rag_answer/stats | json_get 'j["labels"]["labelled"]')" 20 \
  "the statistics count the labels"
"$PY" "$SRC/scripts/loop_feedback.py" export rag_answer >"$TMP/training.json"
assert_eq "$(json_get 'len(j)' <"$TMP/training.json")" "$n_fb" "the export holds a question per answer"

# The crossing feedback fired the trigger: one firing, and the run it started.
wait_for 120 bash -c "curl -sf '$API/v1/triggers/rag_answer/retrain/firings' | grep -q run_id" \
  || fail "the trigger did not fire: $(api_get '/v1/triggers?pipeline=rag_answer')"
firings=$(api_get /v1/triggers/rag_answer/retrain/firings)
assert_eq "$(echo "$firings" | json_get 'len(j["firings"])')" 1 "the trigger fired once"
rrun=$(echo "$firings" | json_get 'j["firings"][0]["run_id"]')
echo "$firings" | json_get 'j["firings"][0]["stats"]["feedback"]["window"]' | "$PY" -c 'import json,sys
w = json.load(sys.stdin)
assert w["count"] >= 200 and w["negative_rate"] > 0.1, w' || fail "the firing's statistics do not cross"
ok "the firing records the statistics that crossed"
out=$(wait_run "$rrun" 900)
succeeded "$out" "retrain_reranker, started by the trigger"
assert_eq "$(echo "$out" | json_get 'j["pipeline"]')" retrain_reranker "the firing's run is a retraining"
assert_eq "$(echo "$out" | json_get '[j["params"]["trigger"]["pipeline"], j["params"]["trigger"]["name"]]')" \
  '["rag_answer", "retrain"]' "the run's params carry the trigger"
assert_eq "$(api_get '/v1/triggers?pipeline=rag_answer' | json_get '[j["triggers"][0]["firings"], j["triggers"][0]["last_run_id"]]')" \
  "[1, \"$rrun\"]" "GET /v1/triggers counts the firing and its run"
g=$(echo "$out" | json_get 'json.dumps(j["output"]["gate"])')
assert_eq "$(echo "$g" | json_get 'j["promoted"]')" true "the gate promoted the first reranker"
assert_contains "$(echo "$g" | json_get 'j["reason"]')" "vs no model" "against the retrieval without a model"
v=$(api_get /v1/models/reranker/versions/production)
assert_eq "$(echo "$v" | json_get 'j["version"]')" 1 "reranker@production is v1"
assert_eq "$(echo "$v" | json_get 'j["lineage"]["run_id"]')" "$rrun" "lineage: the training run"
assert_eq "$(echo "$v" | json_get 'j["lineage"]["pipeline"]')" "retrain_reranker@1" "lineage: the pipeline"
assert_eq "$(echo "$v" | json_get 'j["lineage"]["data_digest"]')" "$(echo "$g" | json_get 'j["data_digest"]')" \
  "lineage: the training data's digest"
assert_eq "$(echo "$v" | json_get 'len(j["artifact"]["weights"])')" 10 "the artifact is the model's weights"
assert_contains "$(api_get /v1/models/reranker/history | json_get 'j["history"][0]["reason"]')" "promoted" \
  "the alias move records the gate's scores"

after=$(eval_heldout)
succeeded "$after" "rag_eval on the held-out questions, after"
assert_eq "$(echo "$after" | json_get 'j["output"]["report"]["retrieval"]')" "hybrid+reranker@1" \
  "after: the reranker in production ranks the passages"
echo "$before" >"$TMP/before.json"
echo "$after" >"$TMP/after.json"
echo "$g" >"$TMP/gate.json"
"$PY" - "$TMP/before.json" "$TMP/after.json" "$TMP/gate.json" "$MRR_GAIN" <<'PYEOF' || fail "the held-out metric did not improve"
import json, sys
b = json.load(open(sys.argv[1]))["output"]["report"]["mean"]
a = json.load(open(sys.argv[2]))["output"]["report"]["mean"]
g = json.load(open(sys.argv[3]))
gain = float(sys.argv[4])
print("held out: MRR %.3f -> %.3f, recall@5 %.3f -> %.3f" % (b["mrr"], a["mrr"], b["recall_at_k"],
                                                            a["recall_at_k"]))
assert a["mrr"] >= b["mrr"] + gain, "MRR gain under %s" % gain
assert a["recall_at_k"] >= b["recall_at_k"], "recall@5 fell"
# The gate measured the same thing inside the training run.
assert abs(g["baseline"]["mrr"] - b["mrr"]) < 1e-9, (g["baseline"], b["mrr"])
assert abs(g["challenger"]["mrr"] - a["mrr"]) < 1e-9, (g["challenger"], a["mrr"])
PYEOF
ok "the held-out MRR improved by at least $MRR_GAIN, measured by rag_eval and by the gate alike"

# A second training run on the same data (the triggered run's params: the
# same feedback) is no better: the gate keeps v1.
params=$(api_get "/v1/runs/$rrun" | json_get 'json.dumps(j["params"])')
out=$(wait_run "$(submit "$LP/retrain_reranker.lua" "$params")" 900)
succeeded "$out" "retrain_reranker again"
assert_eq "$(echo "$out" | json_get 'j["output"]["gate"]["promoted"]')" false \
  "the same model again does not beat the champion by the margin"
assert_eq "$(api_get /v1/models/reranker/versions/production | json_get 'j["version"]')" 1 \
  "production stays v1"
assert_eq "$(api_get /v1/models/reranker/versions/2 | json_get 'j["lineage"]["parent"]')" 1 \
  "v2's parent is the champion it was compared with"
ok "the reference feedback loop"
