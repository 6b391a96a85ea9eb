-- Tasks for the cpu and gpu pools, a cached task, and priorities.
local trellis = require "trellis"
return trellis.pipeline {
  name = "e2e-pools", version = "1",
  params = { word = "trellis" },
  tasks = {
    trellis.task { name = "embed", pool = "gpu", run = function(ctx) return "gpu:" .. ctx.params.word end },
    trellis.task { name = "tokenize", pool = "cpu", run = function(ctx) return #ctx.params.word end },
    trellis.task { name = "expensive", cache = true, after = { "tokenize" }, run = function(ctx, n)
      ctx.log("computing expensive", n)
      return n * 1000
    end },
  },
}
