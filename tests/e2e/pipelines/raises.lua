local trellis = require "trellis"
local function helper(x)
  error("bad input " .. tostring(x))
end
return trellis.pipeline {
  name = "e2e-raises", version = "1",
  tasks = {
    trellis.task { name = "ok", run = function(ctx) return 1 end },
    trellis.task { name = "boom", after = { "ok" }, run = function(ctx, v) helper(v) end },
    trellis.task { name = "never", after = { "boom" }, run = function(ctx) return 2 end },
  },
}
