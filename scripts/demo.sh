#!/usr/bin/env bash
# The main job (`make demo`): a local cluster (`trellis dev`: scheduler, 2 CPU
# workers and 1 GPU-pool worker, SQLite state and logs under .trellis/, the
# workers' index files under .trellis/data/) running the reference pipelines
# of lua-pipelines/ on the project's own documentation:
#   1. ingest_docs.lua   docs/ into an index, one task per file
#   2. rag_answer.lua    three questions answered with their sources
#   3. rag_eval.lua      the labelled question set of lua-pipelines/data/,
#                        retrieval and answer metrics
#   4. the feedback loop (docs/reference-pipelines.md, "The feedback loop"):
#      answers to the loop's training questions, feedback and labels on them
#      (from the labelled question set: a stand-in for people, and it says
#      so), the trigger of rag_answer.lua firing on that feedback, the
#      retraining run it starts (lua-pipelines/retrain_reranker.lua), the new
#      version and its lineage in the registry, and the held-out retrieval
#      metric before and after
# then it stops the cluster. With no model configured the answers come from
# the extractive provider (sentences of the passages, no network); set
# TRELLIS_LLM_BASE_URL and TRELLIS_LLM_MODEL (docs/llm.md) to use a model.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${TRELLIS_DEMO_BIN:-build/cli/trellis}"
[ -x "$BIN" ] || { echo "demo: build first (make build)" >&2; exit 1; }
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
PORT="${TRELLIS_DEMO_PORT:-8420}"
export TRELLIS_API="http://127.0.0.1:$PORT"
DATA="${TRELLIS_DEMO_DATA:-.trellis}"
OUT="$(mktemp -d /tmp/trellis-demo.XXXXXX)"

"$BIN" dev --data "$DATA" --api "127.0.0.1:$PORT" 2>"$OUT/dev.err" &
DEV=$!
stop() {
  kill -INT $DEV 2>/dev/null || true
  wait $DEV 2>/dev/null || true
  rm -rf "$OUT"
}
trap stop EXIT
for _ in $(seq 1 300); do
  grep -q "ready: API" "$OUT/dev.err" 2>/dev/null && break
  kill -0 $DEV 2>/dev/null || { cat "$OUT/dev.err" >&2; echo "demo: trellis dev stopped; see $DATA/*.log" >&2; exit 1; }
  sleep 0.1
done
grep -q "ready: API" "$OUT/dev.err" || { cat "$OUT/dev.err" >&2; echo "demo: the cluster did not start" >&2; exit 1; }
sed 's/^trellis dev: /  /' "$OUT/dev.err"

# run FILE [-p K=V]...: runs a pipeline, its progress on stderr, the finished
# run's JSON in $OUT/run.json; stops the demo when the run fails.
run() {
  local file="$1"; shift
  if ! "$BIN" run --wait --json "$file" "$@" >"$OUT/run.json" 2>"$OUT/run.err"; then
    cat "$OUT/run.err" >&2
    echo "demo: $file failed; the workers' logs are in $DATA/" >&2
    exit 1
  fi
  "$PY" -c 'import json,sys; r=json.load(open(sys.argv[1])); print("  run %s: %s, %d tasks" % (r["run_id"], r["state"], r["tasks"]["total"]))' "$OUT/run.json"
}

echo
echo "== 1. ingest docs/ into an index (lua-pipelines/ingest_docs.lua)"
run lua-pipelines/ingest_docs.lua -p folder=docs
"$PY" - "$OUT/run.json" "$DATA" <<'PYEOF'
import json, sys
s = json.load(open(sys.argv[1]))["output"]["summary"]
print(f"  {s['files']} files: {s['changed']} ingested, {s['unchanged']} unchanged, "
      f"{s['removed']} removed; {s['chunks']} chunks written, {s['docs']} in the index")
print(f"  index: {sys.argv[2]}/data/{s['index']} ({'hybrid: vectors stored' if s['vectors'] else 'BM25'})")
if s["changed"] == 0:
    print("  (nothing changed since the last ingest: no file was read)")
PYEOF

# rag_answer.lua declares a trigger that runs retrain_reranker: that one is
# registered first (a trigger's run must be), then rag_answer with its trigger.
"$BIN" register lua-pipelines/retrain_reranker.lua >/dev/null
"$BIN" register lua-pipelines/rag_answer.lua >/dev/null

echo
echo "== 2. answer three questions with their sources (lua-pipelines/rag_answer.lua)"
run lua-pipelines/rag_answer.lua -p 'questions=["How are duplicate chunks detected when a folder is ingested?", "What happens when a worker is silent for three heartbeat intervals?", "What does trellis dev do when a worker process dies?"]'
"$PY" - "$OUT/run.json" <<'PYEOF'
import json, sys, textwrap
for i, a in enumerate(json.load(open(sys.argv[1]))["output"]["answer"], 1):
    print(f"\n  Q{i}. {a['question']}")
    for line in a["answer"].splitlines():
        for w in textwrap.wrap(line, 92, subsequent_indent="  ") or [""]:
            print("      " + w)
    srcs = []
    for s in a["sources"]:
        where = s["source"] + (" > " + s["heading"] if s.get("heading") else "")
        if where not in srcs:
            srcs.append(where)
    print("      sources: " + "; ".join("docs/" + s for s in srcs[:3]))
    u = a.get("usage") or {}
    if a["provider"] == "extractive":
        by = "the extractive provider (sentences quoted from the passages, no model)"
    else:
        by = f"model {a['model']} of provider {a['provider']}"
    print(f"      answered by {by}")
    print(f"      retrieval {a['retrieval']}; prompt '{a['prompt']['name']}' "
          f"sha256 {a['prompt']['digest'][:12]}; "
          f"tokens {u.get('prompt_tokens', 0)} in / {u.get('completion_tokens', 0)} out")
PYEOF

echo
echo "== 3. evaluate on lua-pipelines/data/questions.jsonl (lua-pipelines/rag_eval.lua)"
run lua-pipelines/rag_eval.lua
"$PY" - "$OUT/run.json" <<'PYEOF'
import json, sys
r = json.load(open(sys.argv[1]))["output"]["report"]
m, k = r["mean"], r["k"]
by = ("the extractive provider" if r["provider"] == "extractive"
      else f"model {r['model']} of {r['provider']}")
print(f"  {r['n']} questions, top {k} passages each, {r['retrieval']} retrieval, answers by {by}")
print(f"  retrieval (file level)   recall@{k} {m['recall_at_k']:.3f}   MRR {m['mrr']:.3f}   "
      f"nDCG@{k} {m['ndcg_at_k']:.3f}")
print(f"    recall@{k}: the share of a question's source files found in its top {k} passages;")
print(f"    MRR: 1 / the rank of the first passage from a right file (1 = first, 0.5 = second);")
print(f"    nDCG@{k}: the top {k}'s order against the best possible, 1 = ideal. Means over the questions.")
if "section_recall_at_k" in m:
    print(f"  retrieval (section)      recall@{k} {m['section_recall_at_k']:.3f}")
print(f"  answers                  exact match {m['exact_match']:.3f}   token F1 {m['f1']:.3f}   "
      f"ROUGE-L {m['rouge_l']:.3f}")
if r["provider"] == "extractive":
    print("  (extractive answers quote whole sentences, so exact match and F1 against the")
    print("   short reference answers stay low; configure a model to compare.)")
missed = [q for q in r["questions"] if q["metrics"]["recall_at_k"] < 1]
if missed:
    print(f"  questions whose source was not fully retrieved in the top {k}:")
    for q in missed:
        text = q.get("question") or q["id"]
        want = ", ".join(q.get("sources") or [])
        print(f"    - {text}" + (f" (expected from {want})" if want else ""))
PYEOF

echo
echo "== 4. the feedback loop (lua-pipelines/retrain_reranker.lua; docs/reference-pipelines.md)"
echo "  an index with vectors for the loop (loop.db), and the held-out questions without a reranker:"
run lua-pipelines/ingest_docs.lua -p folder=docs -p index=loop.db -p embed=true
HELD=lua-pipelines/data/loop_heldout.jsonl
TRAIN=lua-pipelines/data/loop_train.jsonl
run lua-pipelines/rag_eval.lua -p questions=$HELD -p index=loop.db -p reranker=false
cp "$OUT/run.json" "$OUT/before.json"
"$PY" - "$OUT/before.json" <<'PYEOF'
import json, sys
r = json.load(open(sys.argv[1]))["output"]["report"]
print(f"  before: {r['n']} held-out questions, {r['retrieval']}: MRR {r['mean']['mrr']:.3f}, "
      f"recall@{r['k']} {r['mean']['recall_at_k']:.3f}")
PYEOF
echo
echo "  answers to the $(grep -c . $TRAIN) training questions, the 20 least sure retrievals queued for labelling:"
QS=$("$PY" -c 'import json,sys; print(json.dumps([json.loads(l)["question"] for l in open(sys.argv[1]) if l.strip()]))' $TRAIN)
run rag_answer -p "questions=$QS" -p index=loop.db -p request_labels=20
ARUN=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["run_id"])' "$OUT/run.json")
echo
echo "  feedback and labels. NOT FROM PEOPLE: scripts/loop_feedback.py stands in for them, rating"
echo "  each answer and labelling the queue from the labelled question set ($TRAIN):"
"$PY" scripts/loop_feedback.py rate "$ARUN" $TRAIN | sed 's/^/  /'
"$BIN" labels --pipeline rag_answer --state labelled 2>/dev/null | head -4 | sed 's/^/  /' || true
echo
echo "  the trigger of rag_answer.lua: retrain once 200 ratings of the last hour are in and more"
echo "  than 10% are thumbs down (trellis triggers):"
"$PY" - "$OUT/firing.json" <<'PYEOF'
import json, os, sys, time, urllib.request
api = os.environ["TRELLIS_API"]
def get(path):
    with urllib.request.urlopen(api + path, timeout=60) as r:
        return json.load(r)
for _ in range(600):  # the trigger is evaluated off the loop, in a sandbox: allow it time
    f = get("/v1/triggers/rag_answer/retrain/firings")["firings"]
    if f:
        json.dump(f[-1], open(sys.argv[1], "w"))  # newest first: the first firing is the last
        break
    time.sleep(0.2)
else:
    sys.exit("demo: the trigger did not fire: %s" % get("/v1/triggers?pipeline=rag_answer"))
PYEOF
"$BIN" triggers --pipeline rag_answer | sed 's/^/  /'
RRUN=$("$PY" - "$OUT/firing.json" <<'PYEOF'
import json, sys
f = json.load(open(sys.argv[1]))
w = f["stats"]["feedback"]["window"]
print(f"  it fired at {f['fired_at']} on {w['count']} ratings, {w['negative_rate']:.0%} thumbs down, "
      f"{f['stats']['labels']['labelled']} labels; it started {f['run_id']}", file=sys.stderr)
print(f["run_id"])
PYEOF
)
echo
echo "  the retraining run $RRUN (retrain_reranker.lua: it reads the feedback and labels the"
echo "  trigger fired on through trellis.feedback, trains, evaluates and goes through the gate):"
"$PY" - "$RRUN" "$OUT/run.json" <<'PYEOF'
import json, os, sys, urllib.request
api = os.environ["TRELLIS_API"]
while True:
    with urllib.request.urlopen(f"{api}/v1/runs/{sys.argv[1]}?wait=5", timeout=60) as r:
        run = json.load(r)
    if run["state"] in ("succeeded", "failed", "cancelled"):
        break
json.dump(run, open(sys.argv[2], "w"))
print(f"  run {run['run_id']}: {run['state']}, {run['tasks']['total']} tasks, params.trigger = "
      f"{{pipeline: {run['params']['trigger']['pipeline']}, name: {run['params']['trigger']['name']}}}")
if run["state"] != "succeeded":
    sys.exit(f"demo: the retraining run {run['state']}; the workers' logs are in the data folder")
PYEOF
"$PY" - "$OUT/run.json" <<'PYEOF'
import json, sys
g = json.load(open(sys.argv[1]))["output"]["gate"]
print(f"  trained on {g['n_train']} questions (data {g['data_digest'][:19]}...), evaluated on "
      f"{g['n_heldout']} held-out ones it never saw")
print(f"  registered reranker v{g['version']}; {g['reason']}")
d = g["baseline_one_per_file"]
print(f"  (no model but one passage per file first, as the reranker picks them: MRR {d['mrr']:.3f}, "
      f"recall@{d['k']} {d['recall_at_k']:.3f}: the rest of the gain is the model's)")
PYEOF
echo
echo "  the registry (trellis models reranker):"
"$BIN" models reranker | sed 's/^/  /'
echo
run lua-pipelines/rag_eval.lua -p questions=$HELD -p index=loop.db
"$PY" - "$OUT/before.json" "$OUT/run.json" <<'PYEOF'
import json, sys
b = json.load(open(sys.argv[1]))["output"]["report"]
a = json.load(open(sys.argv[2]))["output"]["report"]
k = a["k"]
print(f"  held-out retrieval ({a['n']} questions, file level, top {k} passages):")
print(f"    before  {b['retrieval']:<22} MRR {b['mean']['mrr']:.3f}   recall@{k} {b['mean']['recall_at_k']:.3f}")
print(f"    after   {a['retrieval']:<22} MRR {a['mean']['mrr']:.3f}   recall@{k} {a['mean']['recall_at_k']:.3f}")
PYEOF

echo
echo "== the runs (trellis runs)"
"$BIN" runs --limit 3
echo
echo "stopping the cluster; state and logs stay in $DATA/"
