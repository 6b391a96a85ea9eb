#!/usr/bin/env bash
# trellis.index calls run off the worker's loop: while one task upserts
# 50,000 vectors in one call and searches them, the worker's heartbeats keep
# it listed and a task beside it keeps waking on time.
source "$(dirname "$0")/cluster.sh"
P="$SRC/tests/e2e/pipelines"
export TRELLIS_DATA_DIR="$TMP/data"
start_scheduler
start_worker a --slots 4
wait_workers 1

id=$(submit "$P/vec_search.lua" "{\"ticks\": ${TICKS:-200}}")
out=$(wait_run "$id" 240)
assert_eq "$(echo "$out" | json_get 'j["state"]')" succeeded "the run succeeds"
assert_eq "$(echo "$out" | json_get 'j["output"]["index"]["count"]')" 50000 "50,000 documents indexed"
assert_eq "$(echo "$out" | json_get 'j["output"]["index"]["hits"]')" 5 "the searches found k hits"
upsert=$(echo "$out" | json_get 'j["output"]["index"]["upsert_s"]')
search=$(echo "$out" | json_get 'j["output"]["index"]["search_s"]')
gap=$(echo "$out" | json_get 'j["output"]["ticker"]')
echo "upsert of 50,000 took ${upsert}s, 20 searches ${search}s; longest gap between ticks ${gap}s"
grep -q 'worker gone worker=w-a' "$TMP/scheduler.log" && fail "the worker was dropped for missed heartbeats"
ok "the worker was never dropped (heartbeats kept flowing)"
# Had the upsert run on the loop, the ticker would have slept through it.
"$PY" -c "import sys; u, g = float(sys.argv[1]), float(sys.argv[2]); sys.exit(0 if g < u else 1)" \
  "$upsert" "$gap" || fail "the ticker stalled for ${gap}s, as long as the upsert (${upsert}s)"
ok "the ticker kept waking during the upsert (gap ${gap}s < upsert ${upsert}s)"
echo "all passed"
