-- One task that answers params.question (the feedback loop's tests rate it).
local trellis = require "trellis"
return trellis.pipeline {
  name = "e2e-answer", version = "1",
  params = { question = "?" },
  tasks = {
    trellis.task { name = "answer", run = function(ctx)
      return { answer = "an answer to " .. ctx.params.question }
    end },
  },
}
