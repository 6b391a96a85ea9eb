-- root -> square (map over 1..n) -> total, for retries (test_runctl.sh). Every
-- instance that runs appends its name to DIR/count (a side effect a reused
-- output does not repeat) and fails while DIR/fail-NAME exists.
local trellis = require "trellis"

local function mark(ctx, name)
  local r = trellis.exec { argv = { "sh", "-c", 'echo "$1" >> "$2/count"; test ! -e "$2/fail-$1"',
                                    "sh", name, ctx.params.dir } }
  if r.status ~= 0 then error("broken: " .. name) end
end

return trellis.pipeline {
  name = "e2e-rerun", version = "1",
  params = { dir = "", n = 5, label = "x", strict = false },
  tasks = {
    trellis.task { name = "root", run = function(ctx)
      mark(ctx, "root")
      local t = {}
      for i = 1, ctx.params.n do t[i] = i end
      return { run = ctx.run_id, items = t }
    end },
    trellis.task { name = "items", after = { "root" }, run = function(ctx, root)
      return root.items
    end },
    trellis.task { name = "square", map = "items", run = function(ctx, i)
      mark(ctx, "square" .. i)
      return { run = ctx.run_id, v = i * i }
    end },
    trellis.task { name = "total", after = { "square" }, run = function(ctx, squares)
      mark(ctx, "total")
      local s = 0
      for _, x in ipairs(squares) do s = s + x.v end
      return s
    end },
  },
}
