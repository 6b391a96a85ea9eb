-- A guard naming a check that does not exist: refused at submit (tests/e2e/test_guard.sh).
local trellis = require "trellis"
return trellis.pipeline {
  name = "e2e-guard-bad",
  guards = { input = { toxicity = true } },
  tasks = { trellis.task { name = "a", run = function() return 1 end } },
}
