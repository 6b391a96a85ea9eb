-- A subrun of e2e-flow-child, then an approval (tests/e2e/test_flow.sh).
local trellis = require "trellis"
return trellis.pipeline {
  name = "e2e-flow-parent", version = "1",
  params = { s = 0, gate_timeout = 600 },
  tasks = {
    trellis.task { name = "a", run = function() return 21 end },
    trellis.subrun { name = "sub", pipeline = "e2e-flow-child@1", after = "a",
      params = function(ctx, a) return { q = a, s = ctx.params.s } end },
    trellis.approval { name = "gate", after = "sub", timeout = 600 },
    trellis.task { name = "final", after = { "sub", "gate" }, run = function(ctx, sub, gate)
      return { doubled = sub.double, decision = gate.decision, comment = gate.comment,
               user = gate.user }
    end },
  },
}
