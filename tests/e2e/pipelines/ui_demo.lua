-- The web view's browser test (tests/e2e/test_ui.sh): a fan-out drawn as one
-- node, a slow task whose node the page watches go running -> succeeded,
-- known log lines, and an LLM call (to tests/llm/fake_llm.py) with its tokens.
local trellis = require "trellis"
return trellis.pipeline {
  name = "e2e-ui", version = "1",
  params = { n = 3, slow = 6 },
  tasks = {
    trellis.task { name = "prepare", run = function(ctx)
      ctx.log("preparing " .. ctx.params.n .. " items")
      local t = {}
      for i = 1, ctx.params.n do t[i] = i end
      return t
    end },
    trellis.task { name = "work", map = "prepare", run = function(ctx, i)
      trellis.sleep(0.2 * i)
      ctx.log("item " .. i .. " done")
      return i * 10
    end },
    trellis.task { name = "slow", after = { "prepare" }, run = function(ctx)
      ctx.log("slow task started")
      trellis.sleep(ctx.params.slow)
      ctx.log("slow task reached the end")
      return "rested"
    end },
    trellis.task { name = "answer", after = { "work", "slow" }, run = function(ctx, xs, rest)
      local llm = require "trellis.llm"
      local r = llm.chat { messages = { { role = "user", content = "sum these numbers please" } },
                           model = "ok-a" }
      ctx.log("asked the model")
      return { text = r.text, items = #xs, rest = rest }
    end },
  },
}
