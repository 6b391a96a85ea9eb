-- A file whose top level computes for 6 s, on the worker only (the
-- scheduler's sandbox has no trellis.now): the worker evaluates it off
-- its loop, so its heartbeats and other tasks go on meanwhile.
local trellis = require "trellis"
if trellis.now then
  local t0 = trellis.now()
  while trellis.now() - t0 < 6 do end
end
return trellis.pipeline {
  name = "e2e-slow-load", version = "1",
  tasks = { trellis.task { name = "after", run = function(ctx) return "loaded" end } },
}
