-- Tasks placed by labels: `n` instances for zone a and `n` for zone b (with
-- disk = ssd too); the list task goes anywhere.
local trellis = require "trellis"
local function list(ctx)
  local t = {}
  for i = 1, ctx.params.n do t[i] = i end
  return t
end
local tasks = {
  trellis.task { name = "list", run = list },
  trellis.task { name = "in_a", map = "list", labels = { zone = "a" },
                 run = function(ctx, i) trellis.sleep(0.02); return i end },
  trellis.task { name = "in_b", map = "list", labels = { zone = "b", disk = "ssd" },
                 run = function(ctx, i) trellis.sleep(0.02); return i end },
}
return trellis.pipeline { name = "e2e-placement", version = "1", params = { n = 6 }, tasks = tasks }
