-- A run budget (tests/e2e/test_budgets.sh): `fb` makes one call to an
-- expensive model whose providers-file budget_fallback is cheaper, and
-- on_budget = "fallback" lets it fall back; then `seq` makes calls one after
-- the other until one does not fit the pipeline's budget.
local trellis = require "trellis"
return trellis.pipeline {
  name = "e2e-llm-budget-run", version = "1",
  budget = { tokens = 100, cost = 0.01 },
  on_budget = "fallback",
  tasks = {
    trellis.task { name = "seq", after = { "fb" }, run = function(ctx)
      local llm = require "trellis.llm"
      local n = 0
      for _ = 1, 50 do
        local ok, err = pcall(llm.chat, { messages = { { role = "user", content = "hi" } },
                                          model = "ok-seq", max_tokens = 16 })
        if not ok then return { calls = n, error = tostring(err) } end
        n = n + 1
      end
      return { calls = n }
    end },
    trellis.task { name = "fb", run = function(ctx)
      local llm = require "trellis.llm"
      local r = llm.chat { messages = { { role = "user", content = "hi" } },
                           model = "ok-big", max_tokens = 16 }
      return r.model
    end },
  },
}
