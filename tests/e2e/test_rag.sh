#!/usr/bin/env bash
# trellis.ingest / index / prompt / eval in the real worker: a folder of
# Markdown and HTML into an index under the worker's data folder, retrieval
# and metrics; the second run finds the folder unchanged and does no work;
# ingest.url fetches an HTML page through trellis.http; a path outside the
# allowed roots is refused.
source "$(dirname "$0")/cluster.sh"
P="$SRC/tests/e2e/pipelines"

mkdir -p "$TMP/corpus/sub" "$TMP/data"
printf '# Fruit\n\n## Bananas\n\nBananas are yellow and curved.\n' >"$TMP/corpus/bananas.md"
printf '# Fruit\n\n## Apples\n\nApples are red or green.\n' >"$TMP/corpus/sub/apples.md"
printf '<html><head><title>Cherries</title><script>x()</script></head><body><h2>Cherry</h2><p>Cherries are small &amp; dark red.</p></body></html>' \
  >"$TMP/corpus/cherries.html"

start_scheduler
TRELLIS_DATA_DIR="$TMP/data" TRELLIS_INGEST_ROOTS="$TMP/corpus" start_worker rag --slots 4
wait_workers 1

out=$(wait_run "$(submit "$P/rag_e2e.lua" "{\"root\": \"$TMP/corpus\"}")" 90)
assert_eq "$(echo "$out" | json_get 'j["state"]')" succeeded "rag run succeeds"
assert_eq "$(echo "$out" | json_get 'j["output"]["answer"]["top"]')" bananas.md "BM25 top hit"
assert_eq "$(echo "$out" | json_get 'j["output"]["answer"]["heading"]')" Bananas "hit heading"
assert_eq "$(echo "$out" | json_get 'j["output"]["answer"]["recall"]')" 1.0 "recall@1"
assert_eq "$(echo "$out" | json_get 'j["output"]["answer"]["f1"]')" 1.0 "token F1"
assert_eq "$(echo "$out" | json_get 'j["output"]["answer"]["ingested"]["changed"]')" 3 "three files ingested"
assert_eq "$(echo "$out" | json_get 'len(j["output"]["answer"]["prompt_digest"])')" 64 "prompt digest"
test -f "$TMP/data/e2e/fruit.db" || fail "the index is not under the data folder"
ok "index under the data folder"

out=$(wait_run "$(submit "$P/rag_e2e.lua" "{\"root\": \"$TMP/corpus\", \"question\": \"cherries\"}")" 90)
assert_eq "$(echo "$out" | json_get 'j["output"]["answer"]["ingested"]["changed"]')" 0 "unchanged folder: no work"
assert_eq "$(echo "$out" | json_get 'j["output"]["answer"]["ingested"]["unchanged"]')" 3 "unchanged files"
assert_eq "$(echo "$out" | json_get 'j["output"]["answer"]["top"]')" cherries.html "HTML text indexed"

# ingest.url through trellis.http: an HTML page served on loopback.
HPORT=$(free_port)
"$PY" -m http.server "$HPORT" --bind 127.0.0.1 --directory "$TMP/corpus" >"$TMP/http.log" 2>&1 &
PIDS+=("$!")
wait_for 10 curl -sf "http://127.0.0.1:$HPORT/cherries.html" || fail "http.server did not start"
URL="http://127.0.0.1:$HPORT/cherries.html"
out=$(wait_run "$(submit "$P/rag_e2e.lua" "{\"root\": \"$TMP/corpus\", \"url\": \"$URL\"}")" 90)
assert_eq "$(echo "$out" | json_get 'j["output"]["fetch"]["format"]')" html "format from Content-Type"
assert_eq "$(echo "$out" | json_get 'j["output"]["fetch"]["source"]')" "$URL" "the URL is the source"
# The title is a paragraph of its own; the h2 starts a section.
assert_eq "$(echo "$out" | json_get 'j["output"]["fetch"]["all"]')" \
  "Cherries|## Cherry

Cherries are small & dark red." "text extracted from the fetched page"

out=$(wait_run "$(submit "$P/rag_e2e.lua" '{"root": "/etc"}')" 90)
assert_eq "$(echo "$out" | json_get 'j["state"]')" failed "a root outside the allowed roots fails"
assert_contains "$(api_get "/v1/runs/$(echo "$out" | json_get 'j["run_id"]')/tasks")" \
  "outside the allowed roots" "the error names the rule"
