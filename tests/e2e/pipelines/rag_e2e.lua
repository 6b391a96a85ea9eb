-- trellis.ingest, index, prompt and eval in a real worker: a folder into an
-- index (params.root), a hybrid-free BM25 retrieval, a rendered prompt and
-- metrics. Worker modules are required inside run: the scheduler reads the
-- graph without them.
local trellis = require "trellis"
return trellis.pipeline {
  name = "e2e-rag", version = "1",
  extra_params = true, -- optional params (nil unless a run gives them)
  params = { root = ".", question = "yellow bananas" },
  tasks = {
    trellis.task { name = "ingest", run = function(ctx)
      local ingest, index = require "trellis.ingest", require "trellis.index"
      local idx = index.open("e2e/fruit.db")
      local s = ingest.folder { root = ctx.params.root, glob = "*.*", index = idx, size = 200,
                                overlap = 20 }
      local n = idx:count()
      idx:close()
      return { files = s.files, changed = s.changed, unchanged = s.unchanged, docs = n }
    end },
    trellis.task { name = "fetch", run = function(ctx)
      if not ctx.params.url then return { chunks = 0 } end
      local chunks = require("trellis.ingest").url(ctx.params.url)
      local texts = {}
      for i, c in ipairs(chunks) do texts[i] = c.text end
      return { chunks = #chunks, all = table.concat(texts, "|"),
               source = chunks[1] and chunks[1].meta.source,
               format = chunks[1] and chunks[1].meta.format }
    end },
    trellis.task { name = "answer", after = { "ingest" }, run = function(ctx, ing)
      local index, prompt, eval = require "trellis.index", require "trellis.prompt",
                                  require "trellis.eval"
      local idx = index.open("e2e/fruit.db")
      local hits = idx:search { query = ctx.params.question, k = 3 }
      idx:close()
      local ids = {}
      for i, h in ipairs(hits) do ids[i] = h.meta.source end
      local p = prompt.template { name = "qa", text = "Context: {{ctx}}\nQ: {{q}}" }
      local text = p:render { ctx = hits[1] and hits[1].text or "", q = ctx.params.question }
      return {
        top = hits[1] and hits[1].meta.source, heading = hits[1] and hits[1].meta.heading,
        prompt_digest = p.digest, prompt_len = #text,
        recall = eval.recall_at_k(ids, { "bananas.md" }, 1),
        f1 = eval.f1("bananas are yellow", "Bananas are yellow."),
        ingested = ing,
      }
    end },
  },
}
