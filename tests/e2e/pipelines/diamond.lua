-- a -> (b, c) -> d. With x = 5: b = 10, c = 8, d = 18.
local trellis = require "trellis"
return trellis.pipeline {
  name = "e2e-diamond", version = "1",
  params = { x = 1 },
  tasks = {
    trellis.task { name = "a", run = function(ctx) ctx.log("start", ctx.params.x) return ctx.params.x end },
    trellis.task { name = "b", after = { "a" }, run = function(ctx, a) return a * 2 end },
    trellis.task { name = "c", after = { "a" }, run = function(ctx, a) return a + 3 end },
    trellis.task { name = "d", after = { "b", "c" }, run = function(ctx, b, c)
      ctx.log("sum of", b, "and", c)
      return b + c
    end },
  },
}
