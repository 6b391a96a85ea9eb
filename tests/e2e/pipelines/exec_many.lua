-- n short processes at once on one worker, and a probe task that measures how
-- late its 10 ms timers fire meanwhile (the worker loop's worst stall).
local trellis = require "trellis"
return trellis.pipeline {
  name = "e2e-exec-many", version = "1",
  params = { n = 100, probe_s = 3 },
  tasks = {
    trellis.task { name = "list", run = function(ctx)
      local t = {}
      for i = 1, ctx.params.n do t[i] = i end
      return t
    end },
    trellis.task { name = "proc", map = "list", run = function(ctx, i)
      local r = trellis.exec { argv = { "sh", "-c", "echo proc $0; sleep 0.2; echo done", tostring(i) } }
      assert(r.status == 0 and r.stdout == "proc " .. i .. "\ndone\n", r.stdout)
      return trellis.now()
    end },
    trellis.task { name = "probe", run = function(ctx)
      local worst, t_end = 0, trellis.now() + ctx.params.probe_s
      while trellis.now() < t_end do
        local t0 = trellis.now()
        trellis.sleep(0.01)
        local lag = trellis.now() - t0 - 0.01
        if lag > worst then worst = lag end
      end
      return worst
    end },
  },
}
