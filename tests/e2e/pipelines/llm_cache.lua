-- Two identical cached llm.chat calls in one task, then a third with
-- another text: the second is answered from the worker's cache.
-- Worker modules are required inside run: the scheduler reads the graph
-- without them.
local trellis = require "trellis"
return trellis.pipeline {
  name = "e2e-llm-cache", version = "1",
  params = { model = "ok-cache" },
  tasks = {
    trellis.task { name = "twice", run = function(ctx)
      local llm = require "trellis.llm"
      local function ask(text)
        return llm.chat { messages = { { role = "user", content = text } },
                          model = ctx.params.model, cache = true }
      end
      local a, b, c = ask("same question"), ask("same question"), ask("other question")
      return { first = a.cached, second = b.cached, third = c.cached, same = a.text == b.text,
               text = b.text, tokens = b.usage.completion_tokens }
    end },
  },
}
