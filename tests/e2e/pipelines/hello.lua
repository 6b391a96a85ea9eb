-- One quick task.
local trellis = require "trellis"
return trellis.pipeline {
  name = "e2e-hello", version = "1",
  tasks = { trellis.task { name = "hi", run = function(ctx) return "hello" end } },
}
