-- For test_events.sh: log lines spread over time, a fan-out of `m` whose
-- instances write `lines` lines of `big` bytes each, and a last step.
local trellis = require "trellis"
return trellis.pipeline {
  name = "e2e-events", version = "1",
  params = { n = 5, s = 0.2, m = 2, lines = 0, big = 10 },
  tasks = {
    trellis.task { name = "talk", run = function(ctx)
      for i = 1, ctx.params.n do
        ctx.log("line " .. i)
        if ctx.params.s > 0 then trellis.sleep(ctx.params.s) end
      end
      local t = {}
      for i = 1, ctx.params.m do t[i] = i end
      return t
    end },
    trellis.task { name = "each", map = "talk", run = function(ctx, i)
      for k = 1, ctx.params.lines do
        ctx.log(i .. ":" .. k .. " " .. string.rep("x", ctx.params.big))
        if k % 50 == 0 then trellis.sleep(0.25) end  -- the worker sends logs on its ticks
      end
      return i * 10
    end },
    trellis.task { name = "last", after = { "each" }, run = function(ctx, xs)
      ctx.log("done with " .. #xs)
      return #xs
    end },
  },
}
