-- A CPU-bound task with no timeout whose pcall tries to swallow the stop:
-- only CANCEL stops it.
local trellis = require "trellis"
return trellis.pipeline {
  name = "e2e-cpu-forever", version = "1",
  tasks = {
    trellis.task { name = "spin", run = function(ctx)
      while true do pcall(function() while true do end end) end
    end },
  },
}
