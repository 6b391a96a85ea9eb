-- The whole run may take 1 s; its first task sleeps far longer.
local trellis = require "trellis"
return trellis.pipeline { name = "e2e-run-timeout", version = "1", timeout = 1, tasks = {
  trellis.task { name = "long", run = function() trellis.sleep(60); return 1 end },
  trellis.task { name = "next", after = "long", run = function(ctx, x) return x end },
} }
