-- One llm.chat call whose every option comes from the run's params, so the
-- LLM tests (tests/e2e/test_llm.sh) drive retries, fallbacks, streaming and
-- deadlines with one file. Returns the result; the error, when it raises.
-- Worker modules are required inside run: the scheduler reads the graph
-- without them.
local trellis = require "trellis"
return trellis.pipeline {
  name = "e2e-llm-chat", version = "1",
  params = { text = "hello there", model = "ok" },
  extra_params = true, -- the options below are optional: nil unless a run gives them
  tasks = {
    trellis.task { name = "chat", run = function(ctx)
      local llm = require "trellis.llm"
      local p = ctx.params
      local r = llm.chat {
        messages = { { role = "system", content = "be brief" },
                     { role = "user", content = p.text } },
        model = p.model, provider = p.provider, max_tokens = 64, temperature = 0,
        stream = p.stream, deadline = p.deadline, retries = p.retries, backoff = p.backoff,
        fallback = p.fallback, cache = p.cache, context = p.context,
        response_format = p.response_format,
      }
      ctx.log("latency_ms", r.latency_ms)
      r.latency_ms = nil
      return r
    end },
  },
}
