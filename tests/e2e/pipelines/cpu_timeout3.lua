-- A CPU-bound task with timeout = 3: longer than three heartbeats of the test cluster.
local trellis = require "trellis"
return trellis.pipeline {
  name = "e2e-cpu-timeout3", version = "1",
  tasks = {
    trellis.task { name = "spin", timeout = 3, run = function(ctx) while true do end end },
  },
}
