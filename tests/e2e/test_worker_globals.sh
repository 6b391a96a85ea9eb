#!/usr/bin/env bash
# Each run of a pipeline version gets fresh globals on a worker: run 2 does
# not see what run 1 assigned (plainly, through _G, or in a chunk from load),
# and the file's top-level globals read the same in every run.
source "$(dirname "$0")/cluster.sh"
P="$SRC/tests/e2e/pipelines"
start_scheduler
start_worker a --slots 4
wait_workers 1

id1=$(submit "$P/globals.lua" '{"secret": "alpha"}')
out1=$(wait_run "$id1" 60)
assert_eq "$(echo "$out1" | json_get 'j["state"]')" succeeded "run 1 succeeds"
assert_eq "$(echo "$out1" | json_get 'json.dumps(j["output"]["set"], sort_keys=True)')" \
  '{"after": "alpha/alpha/alpha/changed by alpha", "plain": "nil", "top": "top", "via_g": "nil", "via_load": "nil"}' \
  "run 1 starts with no run globals, sees the top level, and reads back what it assigned"

id2=$(submit "$P/globals.lua" '{"secret": "beta"}')
out2=$(wait_run "$id2" 60)
assert_eq "$(echo "$out2" | json_get 'j["state"]')" succeeded "run 2 succeeds"
assert_eq "$(echo "$out2" | json_get 'json.dumps(j["output"]["set"], sort_keys=True)')" \
  '{"after": "beta/beta/beta/changed by beta", "plain": "nil", "top": "top", "via_g": "nil", "via_load": "nil"}' \
  "run 2 on the same worker does not see run 1's globals (nor its change of a top-level one)"
n=$(grep -c "loaded pipeline 'e2e-globals@1'" "$TMP/worker-a.log")
assert_eq "$n" 1 "both runs used the same pipeline state on the worker"
echo "all passed"
