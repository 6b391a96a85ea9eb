-- root -> square (map over 1..n) -> total. With n = 500 the total is 41791750.
local trellis = require "trellis"
return trellis.pipeline {
  name = "e2e-map", version = "1",
  params = { n = 500 },
  tasks = {
    trellis.task { name = "root", run = function(ctx)
      local t = {}
      for i = 1, ctx.params.n do t[i] = i end
      return t
    end },
    trellis.task { name = "square", map = "root", run = function(ctx, i)
      assert(ctx.index == i, "index and element agree")
      return i * i
    end },
    trellis.task { name = "total", after = { "square" }, run = function(ctx, squares)
      local s = 0
      for _, v in ipairs(squares) do s = s + v end
      return { sum = s, count = #squares }
    end },
  },
}
