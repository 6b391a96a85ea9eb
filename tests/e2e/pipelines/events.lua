-- For test_events.sh: log lines spread over time, a fan-out of `m` and a last step.
local trellis = require "trellis"
return trellis.pipeline {
  name = "e2e-events", version = "1",
  params = { n = 5, s = 0.2, m = 2, big = 0 },
  tasks = {
    trellis.task { name = "talk", run = function(ctx)
      for i = 1, ctx.params.n do
        ctx.log("line " .. i .. (ctx.params.big > 0 and string.rep("x", ctx.params.big) or ""))
        if ctx.params.s > 0 then trellis.sleep(ctx.params.s) end
      end
      local t = {}
      for i = 1, ctx.params.m do t[i] = i end
      return t
    end },
    trellis.task { name = "each", map = "talk", run = function(ctx, i) return i * 10 end },
    trellis.task { name = "last", after = { "each" }, run = function(ctx, xs)
      ctx.log("done with " .. #xs)
      return #xs
    end },
  },
}
