-- diamond.lua: the smallest graph with a fan-out and a fan-in.
--
--        a            a = x
--      /   \
--     b     c         b = 2 * a,  c = a + 3
--      \   /
--        d            d = b + c
--
-- Run with the default x = 1, the output is {"d": 6}; with -p x=7 it is
-- {"d": 24} (b = 14, c = 10), and d logs the line "sum of 14 and 10".
-- Only d is a sink, so the run's output has the single member "d".
local trellis = require "trellis"

return trellis.pipeline {
  name = "diamond",
  version = "1",
  params = { x = 1 },
  tasks = {
    trellis.task {
      name = "a",
      run = function(ctx)
        return ctx.params.x
      end,
    },
    trellis.task {
      name = "b",
      after = { "a" },
      run = function(ctx, a)
        return 2 * a
      end,
    },
    trellis.task {
      name = "c",
      after = { "a" },
      run = function(ctx, a)
        return a + 3
      end,
    },
    trellis.task {
      name = "d",
      after = { "b", "c" },   -- outputs arrive in this order
      run = function(ctx, b, c)
        ctx.log("sum of", b, "and", c)
        return b + c
      end,
    },
  },
}
