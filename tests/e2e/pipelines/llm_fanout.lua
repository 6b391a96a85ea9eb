-- params.n tasks, each one llm.chat call: the in-flight capacity of a worker.
-- Worker modules are required inside run: the scheduler reads the graph
-- without them.
local trellis = require "trellis"
return trellis.pipeline {
  name = "e2e-llm-fanout", version = "1",
  params = { n = 100, model = "latency-200" },
  tasks = {
    trellis.task { name = "items", run = function(ctx)
      local t = {}
      for i = 1, ctx.params.n do t[i] = i end
      return t
    end },
    trellis.task { name = "ask", map = "items", run = function(ctx, i)
      local llm = require "trellis.llm"
      return llm.chat { messages = { { role = "user", content = "q" .. i } },
                        model = ctx.params.model, deadline = 60 }.text
    end },
    trellis.task { name = "count", after = { "ask" }, run = function(ctx, answers)
      return #answers
    end },
  },
}
