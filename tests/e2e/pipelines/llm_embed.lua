-- llm.embed through the configured provider (or the extractive one).
-- Worker modules are required inside run: the scheduler reads the graph
-- without them.
local trellis = require "trellis"
return trellis.pipeline {
  name = "e2e-llm-embed", version = "1",
  extra_params = true, -- optional params (nil unless a run gives them)
  params = { model = "emb" },
  tasks = {
    trellis.task { name = "embed", run = function(ctx)
      local llm = require "trellis.llm"
      local e = llm.embed { input = { "alpha beta", "gamma", "alpha beta" },
                            model = ctx.params.model, provider = ctx.params.provider }
      local same = true
      for i, x in ipairs(e.vectors[1]) do
        if e.vectors[3][i] ~= x then same = false end
      end
      return { n = #e.vectors, dim = #e.vectors[1], same = same,
               differs = e.vectors[1][1] ~= e.vectors[2][1], provider = e.provider,
               tokens = e.usage.prompt_tokens }
    end },
  },
}
