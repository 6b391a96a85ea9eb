-- n tasks that each sleep `s` seconds and return their number; a final sum.
local trellis = require "trellis"
return trellis.pipeline {
  name = "e2e-sleepers", version = "1",
  params = { n = 8, s = 1.5 },
  tasks = {
    trellis.task { name = "list", run = function(ctx)
      local t = {}
      for i = 1, ctx.params.n do t[i] = i end
      return t
    end },
    trellis.task { name = "nap", map = "list", run = function(ctx, i)
      trellis.sleep(ctx.params.s)
      return i
    end },
    trellis.task { name = "sum", after = { "nap" }, run = function(ctx, xs)
      local s = 0
      for _, v in ipairs(xs) do s = s + v end
      return s
    end },
  },
}
