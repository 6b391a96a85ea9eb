-- GPU placement: n1 tasks that need one GPU and n2 that need two, each
-- holding its devices for s seconds and saying which it got and when; a
-- GPU-less task of the same pool (the lists) runs beside them.
local trellis = require "trellis"
local function hold(ctx, i)
  local t0 = trellis.now()
  trellis.sleep(ctx.params.s)
  return { gpus = ctx.gpus, start = t0, stop = trellis.now() }
end
return trellis.pipeline {
  name = "e2e-gpu-place", version = "1",
  params = { n1 = 6, n2 = 3, s = 0.3 },
  tasks = {
    trellis.task { name = "list1", pool = "gpu", run = function(ctx)
      local t = {}
      for i = 1, ctx.params.n1 do t[i] = i end
      return t
    end },
    trellis.task { name = "list2", pool = "gpu", run = function(ctx)
      local t = {}
      for i = 1, ctx.params.n2 do t[i] = i end
      return t
    end },
    trellis.task { name = "one", map = "list1", pool = "gpu", gpus = 1, run = hold },
    trellis.task { name = "two", map = "list2", pool = "gpu", gpus = 2, run = hold },
  },
}
