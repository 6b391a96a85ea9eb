-- bench/budgets.sh: params.n tasks, one llm.chat each; a task returns what the
-- call's reservation cost it (budget_ms: the round trip to the scheduler,
-- batched per worker loop turn), the call's latency, or the error's code and
-- how long the refused call took. With params.skip, no call at all.
local trellis = require "trellis"
return trellis.pipeline {
  name = "bench-budget-calls", version = "1",
  params = { n = 1000, model = "ok", provider = "fake" },
  tasks = {
    trellis.task { name = "items", run = function(ctx)
      local t = {}
      for i = 1, ctx.params.n do t[i] = i end
      return t
    end },
    trellis.task { name = "ask", map = "items", timeout = 300, run = function(ctx, i)
      if ctx.params.skip then return { code = "none" } end
      local llm = require "trellis.llm"
      local t0 = trellis.now()
      local ok, r = pcall(llm.chat, { messages = { { role = "user", content = "hi " .. i } },
                                      model = ctx.params.model, provider = ctx.params.provider,
                                      max_tokens = 16, deadline = 280 })
      if not ok then
        return { code = (tostring(r):match("^([%w_]+):")) or tostring(r),
                 call_ms = (trellis.now() - t0) * 1000 }
      end
      return { code = "ok", budget_ms = r.budget_ms or 0, latency_ms = r.latency_ms }
    end },
  },
}
