-- A task whose HTTP request outlives the task's timeout: the worker must
-- stop it and drop the request cleanly (tests/e2e/test_llm.sh).
local trellis = require "trellis"
return trellis.pipeline {
  name = "e2e-llm-stop", version = "1",
  extra_params = true, -- optional params (nil unless a run gives them)
  params = { ms = 20000 },
  tasks = {
    trellis.task { name = "slow", timeout = 1, run = function(ctx)
      local http = require "trellis.http"
      return http.request { url = ctx.params.base .. "/slow?ms=" .. ctx.params.ms, timeout = 60 }.status
    end },
  },
}
