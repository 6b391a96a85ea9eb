-- A task for a label nobody carries: reported, then failed `unschedulable`.
local trellis = require "trellis"
return trellis.pipeline { name = "e2e-placement-none", version = "1", tasks = {
  trellis.task { name = "nowhere", labels = { zone = "c" }, run = function() return 1 end },
} }
