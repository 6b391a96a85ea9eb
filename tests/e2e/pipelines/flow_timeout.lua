-- An approval nobody answers: its default (reject) applies after 1 s.
local trellis = require "trellis"
return trellis.pipeline {
  name = "e2e-flow-timeout", version = "1",
  tasks = {
    trellis.approval { name = "gate", timeout = 1 },
    trellis.task { name = "after", after = "gate", run = function() return 1 end },
  },
}
