-- "flaky" fails on its first two attempts and succeeds on the third.
local trellis = require "trellis"
return trellis.pipeline {
  name = "e2e-retry", version = "1",
  tasks = {
    trellis.task { name = "flaky", retries = 3, backoff = 0.05, run = function(ctx)
      if ctx.attempt < 3 then error("flaky failure on attempt " .. ctx.attempt) end
      return ctx.attempt
    end },
  },
}
