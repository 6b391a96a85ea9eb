-- A GPU-less task of the gpu pool, and its devices (none).
local trellis = require "trellis"
return trellis.pipeline {
  name = "e2e-gpu-cpu", version = "1",
  tasks = {
    trellis.task { name = "light", pool = "gpu", run = function(ctx) return #ctx.gpus end },
  },
}
