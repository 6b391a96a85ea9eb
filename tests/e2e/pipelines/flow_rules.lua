-- Trigger rules and trellis.skip (tests/e2e/test_flow.sh).
local trellis = require "trellis"
return trellis.pipeline {
  name = "e2e-flow-rules", version = "1",
  tasks = {
    trellis.task { name = "check", run = function() return trellis.skip("nothing new") end },
    trellis.task { name = "boom", run = function() error("bad input") end },
    trellis.task { name = "cleanup", after = { "check", "boom" }, trigger_rule = "all_done",
      run = function(ctx, c, b) return { check = c == nil, boom = b == nil } end },
    trellis.task { name = "never", after = "boom", run = function() return 1 end },
  },
}
