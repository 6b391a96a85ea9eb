-- Traces, metrics and drift (tests/e2e/test_otel.sh): a plain HTTP call, an
-- LLM call and a map of `n` numeric outputs (a uniform spread, shifted by
-- `shift`), whose distribution /metrics watches for drift.
local trellis = require "trellis"
return trellis.pipeline {
  name = "e2e-otel", version = "1",
  params = { base = "", n = 0, shift = 0, llm = true },
  tasks = {
    trellis.task { name = "fetch", run = function(ctx)
      local http = require "trellis.http"
      local r = http.request { url = ctx.params.base .. "/echo", method = "GET" }
      return r.body -- the echo: the headers the request carried
    end },
    trellis.task { name = "ask", after = { "fetch" }, run = function(ctx)
      if not ctx.params.llm then return "" end
      local llm = require "trellis.llm"
      return llm.chat { messages = { { role = "user", content = "hi" } }, model = "ok" }.text
    end },
    trellis.task { name = "list", run = function(ctx)
      local t = {}
      for i = 1, ctx.params.n do t[i] = i end
      return t
    end },
    trellis.task { name = "score", map = "list", run = function(ctx, i)
      return { score = (i % 100) / 100 + ctx.params.shift, note = "x" }
    end },
  },
}
