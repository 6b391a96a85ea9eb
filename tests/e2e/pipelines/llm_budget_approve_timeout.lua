-- on_budget = "approve" with a task timeout of 8 s (tests/e2e/test_budget_approval.sh):
-- undecided, the held call is rejected a little before the task's own timeout.
local trellis = require "trellis"
return trellis.pipeline {
  name = "e2e-llm-budget-approve-timeout", version = "1",
  budget = { tokens = 10 },
  on_budget = "approve",
  tasks = {
    trellis.task { name = "ask", timeout = 8, run = function(ctx)
      local llm = require "trellis.llm"
      local r = llm.chat { messages = { { role = "user", content = "hi" } },
                           model = "ok-appr", max_tokens = 16 }
      return r.model
    end },
  },
}
