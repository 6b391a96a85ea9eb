#!/usr/bin/env bash
# The reference pipelines of lua-pipelines/ end to end, offline, through the
# real scheduler and two workers: ingest_docs.lua indexes the project's own
# docs/ (map over the files), a second ingest does no work, rag_answer.lua
# answers with the extractive provider and cites files of docs/, rag_eval.lua
# scores the shipped question set (metrics in [0, 1], retrieval recall above
# a measured floor). Then rag_answer.lua against tests/llm/fake_llm.py as an
# OpenAI-compatible provider configured by TRELLIS_LLM_* alone: the answer
# and its usage come from that server.
# Heartbeats of 1 s: under ASan on a loaded machine a 200 ms interval can
# declare a busy worker gone and redeliver its tasks (correct, at least once,
# but it blurs the counts asserted here).
HB_MS="${HB_MS:-1000}"
source "$(dirname "$0")/cluster.sh"
LP="$SRC/lua-pipelines"
DOCS="$SRC/docs"
QFILE="$LP/data/questions.jsonl"
# Measured when these floors were set (21 questions, BM25 over docs/, k = 5,
# file level): recall@5 0.976, MRR 0.885. The margin absorbs edits of docs/
# that move a passage or two; the ranking itself is deterministic.
RECALL_FLOOR=0.8
MRR_FLOOR=0.6

# Nothing configures a provider for the first workers: the extractive one answers.
unset TRELLIS_LLM_BASE_URL TRELLIS_LLM_API_KEY TRELLIS_LLM_MODEL TRELLIS_LLM_PROVIDER \
  TRELLIS_LLM_KIND TRELLIS_PROVIDERS
export TRELLIS_DATA_DIR="$TMP/data"
export TRELLIS_INGEST_ROOTS="$DOCS:$LP/data"
mkdir -p "$TRELLIS_DATA_DIR"

start_scheduler
start_worker a --slots 4
WA=$WPID
start_worker b --slots 4
WB=$WPID
wait_workers 2

n_docs=$(cd "$DOCS" && find . -name '*.md' -type f ! -path '*/.*' | wc -l)
[ "$n_docs" -gt 3 ] || fail "docs/ holds only $n_docs Markdown files"
ingest() { wait_run "$(submit "$LP/ingest_docs.lua" "{\"folder\": \"$DOCS\"}")" 180; }
# succeeded RUN_JSON WHAT: asserts the run succeeded, else shows its tasks' errors
succeeded() {
  local state
  state=$(echo "$1" | json_get 'j["state"]')
  [ "$state" = succeeded ] || fail "$2: run $state: $(api_get "/v1/runs/$(echo "$1" | json_get 'j["run_id"]')/tasks" \
    | json_get '[(t["name"], t["index"], t["error"]) for t in j["tasks"] if t["error"]]')"
  ok "$2"
}

# ---- ingest_docs -------------------------------------------------------------
out=$(ingest)
succeeded "$out" "ingest_docs succeeds"
assert_eq "$(echo "$out" | json_get 'j["output"]["summary"]["files"]')" "$n_docs" "every file of docs/ listed"
# A redelivered instance finds its file done by the first delivery: unchanged.
assert_eq "$(echo "$out" | json_get 'j["output"]["summary"]["changed"] + j["output"]["summary"]["unchanged"]')" \
  "$n_docs" "every file ingested"
assert_eq "$(echo "$out" | json_get 'j["output"]["summary"]["changed"] > 0')" true "files changed on the first ingest"
assert_eq "$(echo "$out" | json_get 'j["output"]["summary"]["vectors"]')" false "BM25 only by default"
chunks=$(echo "$out" | json_get 'j["output"]["summary"]["docs"]')
[ "$chunks" -gt "$n_docs" ] || fail "the index holds $chunks chunks for $n_docs files"
ok "the index holds $chunks chunks"
test -f "$TMP/data/docs.db" || fail "no index file under TRELLIS_DATA_DIR"
ok "index file under the data folder"
run_id=$(echo "$out" | json_get 'j["run_id"]')
assert_eq "$(api_get "/v1/runs/$run_id/tasks" | json_get 'sum(1 for t in j["tasks"] if t["name"] == "ingest")')" \
  "$n_docs" "one ingest instance per file"
assert_eq "$(api_get "/v1/runs/$run_id/tasks" | json_get 'len({t["worker"] for t in j["tasks"] if t["name"] == "ingest"}) >= 1')" \
  true "ingest instances ran on the workers"

out=$(ingest)
assert_eq "$(echo "$out" | json_get 'j["output"]["summary"]["changed"]')" 0 "second ingest: no file changed"
assert_eq "$(echo "$out" | json_get 'j["output"]["summary"]["chunks"]')" 0 "second ingest: no chunk written"
assert_eq "$(echo "$out" | json_get 'j["output"]["summary"]["unchanged"]')" "$n_docs" "second ingest: every file unchanged"
assert_eq "$(echo "$out" | json_get 'j["output"]["summary"]["docs"]')" "$chunks" "second ingest: same chunks"

# ---- rag_answer (extractive) ---------------------------------------------------
# rag_answer.lua's trigger runs retrain_reranker: a submission is checked the
# same way as a registration, so that one must be registered first.
register "$LP/retrain_reranker.lua"
Q='{"questions": ["What is the default rrf_k of reciprocal rank fusion?", "Which Lua libraries are not available in the sandbox?", "How many task slots does each worker of trellis dev get?"]}'
out=$(wait_run "$(submit "$LP/rag_answer.lua" "$Q")" 120)
succeeded "$out" "rag_answer succeeds"
echo "$out" >"$TMP/answers.json"
"$PY" - "$TMP/answers.json" "$DOCS" <<'PYEOF' || fail "rag_answer output"
import json, os, re, sys
run = json.load(open(sys.argv[1]))
answers = run["output"]["answer"]
assert len(answers) == 3, answers
for a in answers:
    assert a["provider"] == "extractive" and a["model"] == "extractive", a
    assert a["answer"].startswith("extractive answer (no language model configured):\n"), a["answer"]
    assert a["retrieval"] == "bm25", a
    assert 1 <= len(a["sources"]) <= 5, a["sources"]
    for s in a["sources"]:
        assert os.path.isfile(os.path.join(sys.argv[2], s["source"])), s
    names = {s["source"] for s in a["sources"]}
    assert a["citations"] and set(a["citations"]) <= names, a
    assert re.fullmatch(r"[0-9a-f]{64}", a["prompt"]["digest"]), a["prompt"]
    assert a["prompt"]["name"] == "rag-answer", a["prompt"]
def files(a): return [s["source"] for s in a["sources"]]
assert "rag.md" in files(answers[0]), answers[0]["sources"]
assert "60" in answers[0]["answer"], answers[0]["answer"]
assert "pipelines.md" in files(answers[1]), answers[1]["sources"]
assert "cli.md" in files(answers[2]), answers[2]["sources"]
PYEOF
ok "answers cite files of docs/, with the prompt digest and the model"

# ---- hybrid retrieval: an index with vectors (the extractive provider's hashed embeddings)
out=$(wait_run "$(submit "$LP/ingest_docs.lua" "{\"folder\": \"$DOCS\", \"index\": \"emb/docs.db\", \"embed\": true}")" 180)
assert_eq "$(echo "$out" | json_get 'j["output"]["summary"]["vectors"]')" true "embed = true stores vectors"
assert_eq "$(echo "$out" | json_get 'j["output"]["summary"]["docs"]')" "$chunks" "same chunks with vectors"
out=$(wait_run "$(submit "$LP/rag_answer.lua" '{"index": "emb/docs.db", "question": "Which FTS5 tokenizer does the lexical search use?"}')" 120)
assert_eq "$(echo "$out" | json_get 'j["output"]["answer"][0]["retrieval"]')" hybrid "vectors in the index: hybrid retrieval"
assert_eq "$(echo "$out" | json_get '"rag.md" in [s["source"] for s in j["output"]["answer"][0]["sources"]]')" \
  true "hybrid retrieval finds the source"

# ---- rag_eval ------------------------------------------------------------------
n_q=$(grep -c . "$QFILE")
out=$(wait_run "$(submit "$LP/rag_eval.lua" "{\"questions\": \"$QFILE\"}")" 240)
succeeded "$out" "rag_eval succeeds"
echo "$out" >"$TMP/eval.json"
"$PY" - "$TMP/eval.json" "$n_q" "$RECALL_FLOOR" "$MRR_FLOOR" <<'PYEOF' || fail "rag_eval metrics"
import json, sys
rep = json.load(open(sys.argv[1]))["output"]["report"]
n, floor, mrr_floor = int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
assert rep["n"] == n == len(rep["questions"]), (rep["n"], n)
names = ["recall_at_k", "mrr", "ndcg_at_k", "section_recall_at_k", "exact_match", "f1", "rouge_l"]
for name in names:
    v = rep["mean"][name]
    assert 0.0 <= v <= 1.0, (name, v)
for q in rep["questions"]:
    for name in names:
        assert 0.0 <= q["metrics"][name] <= 1.0, (q["id"], name, q["metrics"])
    assert q["provider"] == "extractive", q
m = rep["mean"]
assert m["recall_at_k"] >= floor, ("recall@k under the floor", m)
assert m["mrr"] >= mrr_floor, ("MRR under the floor", m)
assert m["mrr"] > 0 and m["ndcg_at_k"] > 0 and m["f1"] > 0 and m["rouge_l"] > 0, m
print("rag_eval mean:", json.dumps(m, sort_keys=True))
PYEOF
ok "metrics in [0, 1], recall@5 at least $RECALL_FLOOR, MRR at least $MRR_FLOOR"

# The ranking is deterministic: a second evaluation gives the same retrieval.
out2=$(wait_run "$(submit "$LP/rag_eval.lua" "{\"questions\": \"$QFILE\", \"k\": 5}")" 240)
assert_eq "$(echo "$out2" | json_get 'j["output"]["report"]["mean"]["recall_at_k"]')" \
  "$(echo "$out" | json_get 'j["output"]["report"]["mean"]["recall_at_k"]')" "same recall on a second run"
assert_eq "$(echo "$out2" | json_get 'j["output"]["report"]["mean"]["mrr"]')" \
  "$(echo "$out" | json_get 'j["output"]["report"]["mean"]["mrr"]')" "same MRR on a second run"

# ---- rag_answer through an OpenAI-compatible server ---------------------------------
"$PY" "$SRC/tests/llm/fake_llm.py" >"$TMP/fake.port" 2>"$TMP/fake.log" &
PIDS+=("$!")
wait_for 10 test -s "$TMP/fake.port" || fail "fake LLM server did not start"
FPORT=$(head -n1 "$TMP/fake.port")
kill -TERM "$WA" "$WB"
wait_for 20 bash -c "! kill -0 $WA 2>/dev/null && ! kill -0 $WB 2>/dev/null" || fail "workers did not stop"
wait_workers 0
TRELLIS_LLM_BASE_URL="http://127.0.0.1:$FPORT/v1" TRELLIS_LLM_MODEL=ok-rag start_worker llm --slots 4
wait_workers 1

QUESTION="Which tokenizer does the lexical index use?"
out=$(wait_run "$(submit "$LP/rag_answer.lua" "{\"question\": \"$QUESTION\"}")" 120)
succeeded "$out" "rag_answer with a provider succeeds"
assert_eq "$(echo "$out" | json_get 'j["output"]["answer"][0]["answer"]')" "echo: $QUESTION" "the answer comes from the server"
assert_eq "$(echo "$out" | json_get 'j["output"]["answer"][0]["provider"]')" default "provider from TRELLIS_LLM_BASE_URL"
assert_eq "$(echo "$out" | json_get 'j["output"]["answer"][0]["model"]')" ok-rag "model from TRELLIS_LLM_MODEL"
assert_eq "$(echo "$out" | json_get 'j["output"]["answer"][0]["usage"]["completion_tokens"]')" \
  "$(( $(echo "echo: $QUESTION" | wc -w) ))" "completion tokens counted by the server"
assert_eq "$(echo "$out" | json_get 'j["output"]["answer"][0]["usage"].get("estimated", False)')" false "usage not estimated"
pt=$(echo "$out" | json_get 'j["output"]["answer"][0]["usage"]["prompt_tokens"]')
[ "$pt" -gt 50 ] || fail "prompt tokens $pt: the passages were not sent"
ok "prompt tokens ($pt) count the system prompt with its passages"
assert_eq "$(curl -s "http://127.0.0.1:$FPORT/stats" | json_get 'j["calls"].get("ok-rag", 0)')" 1 "one call reached the server"
rid=$(echo "$out" | json_get 'j["run_id"]')
tdig=$(echo "$out" | json_get 'j["output"]["answer"][0]["prompt"]["digest"]')
assert_eq "$(api_get "/v1/runs/$rid/tasks" | json_get '[c["prompt_digest"] for t in j["tasks"] for c in (t.get("usage") or [])][0]')" \
  "$tdig" "the call's usage record carries the prompt template's digest"
assert_eq "$(echo "$out" | json_get 'j["usage"]["calls"]')" 1 "the run's usage counts the call"
