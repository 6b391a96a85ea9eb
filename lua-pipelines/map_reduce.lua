-- map_reduce.lua: split a list, square each element in its own task
-- instance, add the squares up.
--
--   split  ->  square (one instance per element, map = "split")  ->  total
--
-- `numbers` is a comma-separated string or an array (-p numbers=[1,2,3]).
-- With the default "3,1,4,1,5,9,2,6" the squares are 9, 1, 16, 1, 25, 81,
-- 4, 36 and the output is {"total": {"sum": 173, "count": 8}}; total logs
-- the line "added 8 squares". With -p numbers=[1,2,3] it is
-- {"total": {"sum": 14, "count": 3}}.
local trellis = require "trellis"

return trellis.pipeline {
  name = "map_reduce",
  version = "1",
  params = { numbers = "3,1,4,1,5,9,2,6" },
  tasks = {
    trellis.task {
      name = "split",
      run = function(ctx)
        local numbers = ctx.params.numbers
        if type(numbers) == "table" then
          return numbers
        end
        local out = {}
        for field in string.gmatch(tostring(numbers), "[^,%s]+") do
          out[#out + 1] = assert(math.tointeger(tonumber(field)),
                                 "not an integer: " .. field)
        end
        return out
      end,
    },
    trellis.task {
      name = "square",
      map = "split",          -- the element comes after ctx; ctx.index is its position
      retries = 1,
      run = function(ctx, n)
        return n * n
      end,
    },
    trellis.task {
      name = "total",
      after = { "square" },   -- the array of every square instance's output, in order
      run = function(ctx, squares)
        local sum = 0
        for _, s in ipairs(squares) do
          sum = sum + s
        end
        ctx.log("added", #squares, "squares")
        return { sum = sum, count = #squares }
      end,
    },
  },
}
