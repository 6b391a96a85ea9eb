-- on_budget = "approve" (tests/e2e/test_budget_approval.sh): one call whose
-- worst case (25 tokens) passes the run's 10-token budget is held in the
-- scheduler until an operator decides; approved, it is made.
local trellis = require "trellis"
return trellis.pipeline {
  name = "e2e-llm-budget-approve", version = "1",
  budget = { tokens = 10 },
  on_budget = "approve",
  tasks = {
    trellis.task { name = "ask", run = function(ctx)
      local llm = require "trellis.llm"
      local r = llm.chat { messages = { { role = "user", content = "hi" } },
                           model = "ok-appr", max_tokens = 16 }
      return r.model
    end },
  },
}
