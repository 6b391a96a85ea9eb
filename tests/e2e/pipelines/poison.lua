-- A task stuck in one C call that no hook can stop (a pattern match with
-- exponential backtracking): the watchdog fails the attempt and restarts the
-- worker, and after its retries the run fails.
local trellis = require "trellis"
return trellis.pipeline {
  name = "e2e-poison", version = "1",
  tasks = {
    trellis.task { name = "poison", retries = 1, backoff = 0, run = function(ctx)
      return string.find(string.rep("a", 3000), ".-.-.-.-b")
    end },
  },
}
