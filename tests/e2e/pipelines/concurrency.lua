-- `n` instances sharing the concurrency key "e2e-gpu" (limit 4): each returns
-- the wall-clock interval it ran in, so the test can count overlaps.
local trellis = require "trellis"
return trellis.pipeline { name = "e2e-concurrency", version = "1", params = { n = 50 }, tasks = {
  trellis.task { name = "list", run = function(ctx)
    local t = {}
    for i = 1, ctx.params.n do t[i] = i end
    return t
  end },
  trellis.task { name = "use", map = "list", concurrency = { key = "e2e-gpu", limit = 4 },
                 run = function(ctx, i)
    local t0 = trellis.now()
    trellis.sleep(0.03)
    return { t0, trellis.now() }
  end },
} }
