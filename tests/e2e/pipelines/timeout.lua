-- Two tasks exceed their timeout (one waiting, one spinning on the CPU);
-- an independent task still runs on the same workers afterwards.
local trellis = require "trellis"
return trellis.pipeline {
  name = "e2e-timeout", version = "1",
  tasks = {
    trellis.task { name = "sleepy", timeout = 0.5, run = function(ctx) trellis.sleep(30) return 1 end },
    trellis.task { name = "spinner", timeout = 0.5, run = function(ctx) while true do end end },
    trellis.task { name = "fine", run = function(ctx) trellis.sleep(1.5) return "alive" end },
  },
}
