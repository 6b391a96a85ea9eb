-- The provider a worker falls back to: one configured by TRELLIS_LLM_* alone
-- (pool llmenv), and none at all (pool bare: the extractive provider).
local trellis = require "trellis"
return trellis.pipeline {
  name = "e2e-llm-pools", version = "1",
  tasks = {
    trellis.task { name = "env", pool = "llmenv", run = function(ctx)
      local llm = require "trellis.llm"
      local r = llm.chat { messages = { { role = "user", content = "via env" } } }
      return { text = r.text, provider = r.provider, model = r.model }
    end },
    trellis.task { name = "bare", pool = "bare", run = function(ctx)
      local llm = require "trellis.llm"
      local r = llm.chat { messages = { { role = "user", content = "what do pipelines run?" } },
                           context = { { text = "Cats sleep a lot. Trellis pipelines run tasks.",
                                         source = "notes" } } }
      local e = llm.embed { input = "pipelines" }
      return { provider = r.provider, text = r.text, embed = e.provider,
               providers = llm.providers().extractive.default }
    end },
  },
}
