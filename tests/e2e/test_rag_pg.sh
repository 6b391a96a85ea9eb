#!/usr/bin/env bash
# trellis.index on PostgreSQL, shared by workers: the reference pipelines of
# lua-pipelines/ on a PostgreSQL the test starts (tests/pg/pg_start.sh).
# Worker A (--index-url) ingests docs/ and stops; worker B (--index-url, a
# data folder of its own, so no local file can help) answers and evaluates
# from the same index; a worker with no --index-url reaches the index by
# the URL in the call. Then the same pipelines on the embedded SQLite index:
# the evaluation's recall@5 and MRR on both backends are within 0.02 of each
# other, with BM25 alone and with vectors (hybrid, exact vector path: Debian
# 12 has no pgvector). Worker B's URL holds a password: no log line and no
# task error may show it.
HB_MS="${HB_MS:-1000}"
source "$(dirname "$0")/cluster.sh"
LP="$SRC/lua-pipelines"
DOCS="$SRC/docs"
QFILE="$LP/data/questions.jsonl"
unset TRELLIS_LLM_BASE_URL TRELLIS_LLM_API_KEY TRELLIS_LLM_MODEL TRELLIS_LLM_PROVIDER \
  TRELLIS_LLM_KIND TRELLIS_PROVIDERS TRELLIS_INDEX_URL
export TRELLIS_INGEST_ROOTS="$DOCS:$LP/data"
mkdir -p "$TMP/data-a" "$TMP/data-b" "$TMP/data-c"

start_pg
start_scheduler
# stop_worker PID: TERM, then wait until the scheduler lists no worker.
stop_worker() {
  kill -TERM "$1"
  wait_for 20 bash -c "! kill -0 $1 2>/dev/null" || fail "worker $1 did not stop"
  wait_workers 0
}
succeeded() {
  local state
  state=$(echo "$1" | json_get 'j["state"]')
  [ "$state" = succeeded ] || fail "$2: run $state: $(api_get "/v1/runs/$(echo "$1" | json_get 'j["run_id"]')/tasks" \
    | json_get '[(t["name"], t["index"], t["error"]) for t in j["tasks"] if t["error"]]')"
  ok "$2"
}
n_docs=$(cd "$DOCS" && find . -name '*.md' -type f ! -path '*/.*' | wc -l)

# ---- worker A ingests into PostgreSQL ------------------------------------------
TRELLIS_DATA_DIR="$TMP/data-a" start_worker a --slots 4 --index-url "$PG_URL"
WA=$WPID
wait_workers 1
out=$(wait_run "$(submit "$LP/ingest_docs.lua" "{\"folder\": \"$DOCS\"}")" 180)
succeeded "$out" "ingest_docs into PostgreSQL succeeds"
chunks=$(echo "$out" | json_get 'j["output"]["summary"]["docs"]')
[ "$chunks" -gt "$n_docs" ] || fail "the index holds $chunks chunks for $n_docs files"
ok "PostgreSQL holds $chunks chunks of $n_docs files"
out=$(wait_run "$(submit "$LP/ingest_docs.lua" "{\"folder\": \"$DOCS\", \"index\": \"emb/docs.db\", \"embed\": true}")" 180)
succeeded "$out" "ingest_docs with vectors into PostgreSQL succeeds"
assert_eq "$(echo "$out" | json_get 'j["output"]["summary"]["vectors"]')" true "vectors stored"
[ -z "$(find "$TMP/data-a" -name '*.db')" ] || fail "a SQLite file was written: $(find "$TMP/data-a" -name '*.db')"
ok "no SQLite file on worker A"
assert_eq "$(psql "$PG_URL" -Atc "SELECT count(*) FROM trellis_indexes WHERE name IN ('docs.db', 'emb/docs.db')")" 2 \
  "both indexes registered in PostgreSQL"
stop_worker "$WA"

# ---- worker B retrieves from the same index ------------------------------------
# Its URL carries a password (the test server trusts loopback and ignores
# it): it must appear in no log line and no error.
SECRET=pw-never-logged-7f3a
PG_URL_PW=${PG_URL/trellis@/trellis:$SECRET@}
TRELLIS_DATA_DIR="$TMP/data-b" start_worker b --slots 4 --index-url "$PG_URL_PW"
WB=$WPID
wait_workers 1
out=$(wait_run "$(submit "$LP/ingest_docs.lua" "{\"folder\": \"$DOCS\"}")" 180)
assert_eq "$(echo "$out" | json_get 'j["output"]["summary"]["changed"]')" 0 "worker B: the manifest is shared, nothing to ingest"
register "$LP/retrain_reranker.lua"
Q='{"questions": ["What is the default rrf_k of reciprocal rank fusion?", "How many task slots does each worker of trellis dev get?"]}'
out=$(wait_run "$(submit "$LP/rag_answer.lua" "$Q")" 120)
succeeded "$out" "rag_answer on worker B succeeds"
assert_eq "$(echo "$out" | json_get '"rag.md" in [s["source"] for s in j["output"]["answer"][0]["sources"]]')" \
  true "worker B finds what worker A ingested (rag.md)"
assert_eq "$(echo "$out" | json_get '"cli.md" in [s["source"] for s in j["output"]["answer"][1]["sources"]]')" \
  true "worker B finds cli.md"
out=$(wait_run "$(submit "$LP/rag_answer.lua" '{"index": "emb/docs.db", "question": "Which FTS5 tokenizer does the lexical search use?"}')" 120)
assert_eq "$(echo "$out" | json_get 'j["output"]["answer"][0]["retrieval"]')" hybrid "vectors in PostgreSQL: hybrid retrieval"
assert_eq "$(echo "$out" | json_get '"rag.md" in [s["source"] for s in j["output"]["answer"][0]["sources"]]')" \
  true "hybrid retrieval on PostgreSQL finds the source"
eval_run() { # INDEX OUTFILE
  local o
  o=$(wait_run "$(submit "$LP/rag_eval.lua" "{\"questions\": \"$QFILE\", \"index\": \"$1\"}")" 240)
  succeeded "$o" "rag_eval on $1"
  echo "$o" | json_get 'j["output"]["report"]["mean"]' >"$2"
}
eval_run docs.db "$TMP/pg_bm25.json"
eval_run emb/docs.db "$TMP/pg_hybrid.json"
# A URL whose database does not exist: a clear error, without the password.
out=$(wait_run "$(submit "$LP/rag_answer.lua" "{\"index\": \"${PG_URL_PW%/*}/nosuchdb#docs.db\", \"question\": \"x\"}")" 120)
assert_eq "$(echo "$out" | json_get 'j["state"]')" failed "an unreachable database fails the run"
errs=$(api_get "/v1/runs/$(echo "$out" | json_get 'j["run_id"]')/tasks" | json_get '[t["error"] for t in j["tasks"] if t["error"]]')
assert_contains "$errs" 'cannot open index' "the error says what failed"
assert_contains "$errs" 'nosuchdb' "the error names the database"
case "$errs" in *"$SECRET"*) fail "the password is in a task error: $errs" ;; esac
# PostgreSQL restarts under worker B: its pooled connections are dead, and
# the next calls notice it and connect again instead of failing.
bash "$SRC/tests/pg/pg_stop.sh" "$TMP/pg"
bash "$SRC/tests/pg/pg_start.sh" "$TMP/pg" >/dev/null || fail "PostgreSQL did not restart"
assert_eq "$(cat "$TMP/pg/url")" "$PG_URL" "PostgreSQL restarted on the same port"
out=$(wait_run "$(submit "$LP/rag_answer.lua" "$Q")" 120)
succeeded "$out" "rag_answer after a PostgreSQL restart (stale pooled connections replaced)"
stop_worker "$WB"
if grep -q "$SECRET" "$TMP"/*.log; then fail "the password is in a log: $(grep -l "$SECRET" "$TMP"/*.log)"; fi
ok "the password is in no log line and no error"

# ---- a worker without --index-url: SQLite by default, PostgreSQL by URL ----------
TRELLIS_DATA_DIR="$TMP/data-c" start_worker c --slots 4
wait_workers 1
out=$(wait_run "$(submit "$LP/rag_answer.lua" "{\"index\": \"$PG_URL#docs.db\", \"question\": \"What is the default rrf_k of reciprocal rank fusion?\"}")" 120)
succeeded "$out" "rag_answer with the URL in the call"
assert_eq "$(echo "$out" | json_get '"rag.md" in [s["source"] for s in j["output"]["answer"][0]["sources"]]')" \
  true "the URL in the call reaches the shared index"
out=$(wait_run "$(submit "$LP/ingest_docs.lua" "{\"folder\": \"$DOCS\"}")" 180)
succeeded "$out" "ingest_docs into SQLite succeeds"
test -f "$TMP/data-c/docs.db" || fail "no SQLite index on worker C"
assert_eq "$(echo "$out" | json_get 'j["output"]["summary"]["docs"]')" "$chunks" "same chunks in SQLite"
out=$(wait_run "$(submit "$LP/ingest_docs.lua" "{\"folder\": \"$DOCS\", \"index\": \"emb/docs.db\", \"embed\": true}")" 180)
succeeded "$out" "ingest_docs with vectors into SQLite succeeds"
eval_run docs.db "$TMP/sq_bm25.json"
eval_run emb/docs.db "$TMP/sq_hybrid.json"

"$PY" - "$TMP" <<'PYEOF' || fail "retrieval quality differs between the backends"
import json, sys
t = sys.argv[1]
for mode in ("bm25", "hybrid"):
    pg = json.loads(open(f"{t}/pg_{mode}.json").read())
    sq = json.loads(open(f"{t}/sq_{mode}.json").read())
    print(f"{mode}: sqlite recall@5 {sq['recall_at_k']:.3f} MRR {sq['mrr']:.3f}; "
          f"postgres recall@5 {pg['recall_at_k']:.3f} MRR {pg['mrr']:.3f}")
    for m in ("recall_at_k", "mrr"):
        assert abs(pg[m] - sq[m]) <= 0.02, (mode, m, pg[m], sq[m])
PYEOF
ok "recall@5 and MRR within 0.02 on both backends (BM25 and hybrid)"
