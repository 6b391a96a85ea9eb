#!/usr/bin/env bash
# Ready tasks are dispatched highest priority first (FIFO among equals): with
# one worker, one slot and no prefetch they start in priority order.
source "$(dirname "$0")/cluster.sh"
P="$SRC/tests/e2e/pipelines"
start_scheduler --prefetch 0
# Submit before any worker exists, so that all five are ready at once.
id=$(submit "$P/priority.lua")
start_worker solo --slots 1
out=$(wait_run "$id" 30)
assert_eq "$(echo "$out" | json_get 'j["state"]')" succeeded "priority run succeeds"
order=$(api_get "/v1/runs/$id/tasks" | json_get '" ".join(t["name"] for t in sorted(j["tasks"], key=lambda t: t["started_at"]))')
assert_eq "$order" "top high mid low lowest" "tasks started in priority order"
echo "1 passed, 0 failed"
