-- One task fills an index with 50,000 vectors in one upsert and searches
-- it; beside it a ticker task wakes every 50 ms and reports the longest gap
-- between two wake-ups: index calls run off the worker's loop, so the gap
-- stays short while each call takes long.
local trellis = require "trellis"
return trellis.pipeline {
  name = "e2e-vec-search", version = "1",
  params = { n = 50000, dim = 32, searches = 20, ticks = 200 },
  tasks = {
    trellis.task { name = "index", run = function(ctx)
      local index = require "trellis.index"
      local p = ctx.params
      local idx = index.open("vec-" .. ctx.run_id .. ".db", { dim = p.dim })
      local docs, seed = {}, 7
      for i = 1, p.n do
        local v = {}
        for d = 1, p.dim do
          seed = (seed * 1103515245 + 12345) % 2147483648
          v[d] = seed / 2147483648 - 0.5
        end
        docs[i] = { id = "d" .. i, text = "document number " .. i, vector = v }
      end
      local t0 = trellis.now()
      idx:upsert(docs)
      local upsert_s = trellis.now() - t0
      docs = nil
      t0 = trellis.now()
      local q, hits = {}, nil
      for d = 1, p.dim do q[d] = d % 3 - 1 end
      for s = 1, p.searches do
        hits = idx:search { vector = q, k = 5, mode = "vector" }
      end
      local search_s = trellis.now() - t0
      local n = idx:count()
      idx:close()
      return { count = n, hits = #hits, upsert_s = upsert_s, search_s = search_s }
    end },
    trellis.task { name = "ticker", run = function(ctx)
      local max_gap, last = 0, trellis.now()
      for i = 1, ctx.params.ticks do
        trellis.sleep(0.05)
        local now = trellis.now()
        if now - last > max_gap then max_gap = now - last end
        last = now
      end
      return max_gap
    end },
  },
}
