-- Five independent tasks with different priorities: on one worker with one
-- slot and no prefetch they start highest priority first.
local trellis = require "trellis"
local function work(ctx) trellis.sleep(0.05) return ctx.task end
return trellis.pipeline {
  name = "e2e-priority", version = "1",
  tasks = {
    trellis.task { name = "low", priority = 1, run = work },
    trellis.task { name = "top", priority = 100, run = work },
    trellis.task { name = "mid", priority = 50, run = work },
    trellis.task { name = "lowest", priority = -5, run = work },
    trellis.task { name = "high", priority = 75, run = work },
  },
}
