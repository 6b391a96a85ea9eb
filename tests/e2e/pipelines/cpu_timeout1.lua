-- A CPU-bound task with timeout = 1 whose pcall tries to swallow the stop.
local trellis = require "trellis"
return trellis.pipeline {
  name = "e2e-cpu-timeout1", version = "1",
  tasks = {
    trellis.task { name = "spin", timeout = 1, run = function(ctx)
      while true do pcall(function() while true do end end) end
    end },
  },
}
