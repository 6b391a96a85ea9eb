-- One run of this name at a time; each returns the interval it ran in.
local trellis = require "trellis"
return trellis.pipeline { name = "e2e-max-active", version = "1", max_active_runs = 1,
  params = { s = 0.2 }, tasks = {
  trellis.task { name = "work", run = function(ctx)
    local t0 = trellis.now()
    trellis.sleep(ctx.params.s)
    return { t0, trellis.now() }
  end },
} }
