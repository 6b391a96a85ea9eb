-- The child of flow_parent.lua's subrun: doubles q, after s seconds.
local trellis = require "trellis"
return trellis.pipeline {
  name = "e2e-flow-child", version = "1",
  params = { q = 0, s = 0 },
  tasks = {
    trellis.task { name = "double", run = function(ctx)
      if ctx.params.s > 0 then trellis.sleep(ctx.params.s) end
      return ctx.params.q * 2
    end },
  },
}
