#!/usr/bin/env bash
# An output over 48 MiB (docs/pipelines.md: its RESULT must fit the 64 MiB
# frame bound with logs and usage) fails its task with that bound in the
# error. Building and encoding 49 MiB holds the worker's loop a while under
# the sanitizers: a long heartbeat keeps the worker from being presumed dead.
HB_MS=3000
source "$(dirname "$0")/cluster.sh"
start_scheduler
start_worker a --slots 1
wait_workers 1
cat >"$TMP/big.lua" <<'LUA'
local trellis = require "trellis"
return trellis.pipeline { name = "big-output", version = "1", tasks = {
  trellis.task { name = "big", run = function() return string.rep("x", 49 * 1024 * 1024) end },
} }
LUA
id=$(submit "$TMP/big.lua")
assert_contains "$(wait_run "$id" 120 | json_get 'j["error"]')" "at most 50331648" "an output over 48 MiB fails the task"
echo "1 passed, 0 failed"
