-- params.n tasks, each one llm.chat call that may not fit the budget
-- (tests/e2e/test_budgets.sh): a task answers "ok:<model>" or the error's
-- code. With params.seq, one task makes params.seq calls one after the other
-- and stops at the first refusal. budget and on_budget come from the
-- pipeline's fields, set per test through params.kind.
local trellis = require "trellis"
return trellis.pipeline {
  name = "e2e-llm-budget", version = "1",
  params = { n = 10, model = "ok-bud", max_tokens = 16, provider = "fake" },
  tasks = {
    trellis.task { name = "items", run = function(ctx)
      local t = {}
      for i = 1, ctx.params.n do t[i] = i end
      return t
    end },
    trellis.task { name = "ask", map = "items", timeout = 120, run = function(ctx, i)
      local llm = require "trellis.llm"
      local ok, r = pcall(llm.chat, { messages = { { role = "user", content = "hi" } },
                                      model = ctx.params.model, provider = ctx.params.provider,
                                      max_tokens = ctx.params.max_tokens, deadline = 100 })
      if ok then return "ok:" .. r.model end
      return (tostring(r):match("^([%w_]+):")) or tostring(r)
    end },
  },
}
