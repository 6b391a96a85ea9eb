-- A provider's quota shared by the workers (tests/e2e/test_budgets.sh):
-- `q` makes params.n calls to provider "q" (its rpm in the providers file),
-- `other` params.m calls to another provider, all ready at once. Both declare
-- the providers they call, so the scheduler holds q's tasks while q's quota
-- is used up and gives the worker slots to `other`'s.
-- They run in pool "small": a few slots, so that holding matters.
local trellis = require "trellis"
local function ask(provider, model)
  return function(ctx, i)
    local llm = require "trellis.llm"
    local r = llm.chat { messages = { { role = "user", content = "hi " .. i } },
                         provider = provider, model = model, max_tokens = 16, deadline = 100 }
    return r.model
  end
end
return trellis.pipeline {
  name = "e2e-llm-quota", version = "1",
  params = { n = 60, m = 20 },
  tasks = {
    trellis.task { name = "items", run = function(ctx)
      local t = {}
      for i = 1, ctx.params.n do t[i] = i end
      return t
    end },
    trellis.task { name = "others", run = function(ctx)
      local t = {}
      for i = 1, ctx.params.m do t[i] = i end
      return t
    end },
    trellis.task { name = "q", map = "items", providers = { "q" }, pool = "small", timeout = 120,
                   run = ask("q", "persec-25-q") },
    trellis.task { name = "other", map = "others", providers = { "fake" }, pool = "small", timeout = 120,
                   run = ask("fake", "ok-other") },
  },
}
