-- rag_answer.lua: answer questions from an index built by ingest_docs.lua,
-- citing the passages the answer comes from.
--
--   questions  ->  retrieve (one per question)  ->  answer (one per question)
--
-- `retrieve` searches the index: hybrid ranking (BM25 and vectors fused by
-- reciprocal rank) when the index holds vectors, the question then being
-- embedded with the same provider and model as the chunks, else BM25 alone.
-- `answer` renders the prompt template (trellis.prompt) with the passages,
-- asks trellis.llm, and returns the answer with its sources. With no
-- provider configured, trellis.llm's extractive provider answers with the
-- passages' best sentences and says so; with one (a providers file, or
-- TRELLIS_LLM_BASE_URL and TRELLIS_LLM_MODEL on the workers) a model writes
-- the answer from the same prompt.
--
-- Params:
--   question   one question (a string), or
--   questions  an array of questions (wins over question)
--   index      the index file under the worker's data folder ("docs.db")
--   k          passages retrieved and given to the model (5)
--   model, provider   for llm.chat (the provider's defaults when absent)
--   embed_model, embed_provider   for the question's vector (as ingest_docs)
--   max_tokens (400), temperature (0), top_k (3: sentences of an extractive answer)
--   reranker   the reranker: "reranker@production" when absent (used when
--              one exists: lua-pipelines/retrain_reranker.lua trains it),
--              another "name@version", or false for none
--   candidates passages per ranking the reranker rescores (20)
--   request_labels  N > 0: the N questions whose retrieval was least sure
--              (the smallest margin between the first two passages'
--              scores, trellis.al) go to the labelling queue (0)
--
-- Output: {"answer": [ {question, answer, sources = [{source, heading, score}],
-- citations = [sources the answer cites], retrieval = "bm25" | "hybrid"
-- (+"+reranker@V" when a reranker ranked the passages),
-- provider, model, usage, cost, latency_ms, prompt = {name, version, digest}},
-- ... ]}, one entry per question in order. prompt.digest identifies the
-- template, and every call records it in the task's usage (GET
-- /v1/runs/{id}/tasks, docs/llm.md "Accounting"), so an answer can be traced
-- to its model and prompt.
local trellis = require "trellis"

-- The template: the system message carries the rules and the passages; the
-- question goes alone in the user message (the extractive provider scores
-- sentences by the words of the last user message).
local TEMPLATE = [[You answer questions about the Trellis project from its documentation.
Use only the passages below. Cite each passage you use by its source in brackets,
as in [rag.md]. If the passages do not hold the answer, say that you do not know.

{{passages}}]]

return trellis.pipeline {
  name = "rag_answer",
  version = "1",
  extra_params = true, -- optional params (nil unless a run gives them)
  params = {
    question = "How are duplicate chunks detected when a folder is ingested?",
    index = "docs.db", k = 5, max_tokens = 400, temperature = 0, top_k = 3,
    request_labels = 0,
  },
  tasks = {
    trellis.task {
      name = "questions",
      run = function(ctx)
        local p = ctx.params
        local qs = type(p.questions) == "table" and p.questions or { p.question }
        for i, q in ipairs(qs) do
          if type(q) ~= "string" or not q:find("%S") then
            error(("question %d is not a non-empty string"):format(i))
          end
        end
        return qs
      end,
    },
    trellis.task {
      name = "retrieve",
      map = "questions",
      run = function(ctx, question)
        local p = ctx.params
        local idx <close> = require("trellis.index").open(p.index)
        if idx:count() == 0 then
          error(("index '%s' is empty: run ingest_docs.lua first"):format(p.index))
        end
        local k = math.tointeger(p.k) or 5
        local query = { query = question, k = k }
        local mode = "bm25"
        if idx:dim() > 0 then
          local e = require("trellis.llm").embed {
            input = { question }, model = p.embed_model, provider = p.embed_provider,
          }
          query.vector, mode = e.vectors[1], "hybrid"
        end
        -- The reranker in production, when there is one (lua-pipelines/
        -- retrain_reranker.lua trains it); params.reranker = false turns it
        -- off, a string picks another ("reranker@3").
        local hits
        local rr, rec = require "trellis.rerank", nil
        if p.reranker ~= false then
          rec = rr.production(type(p.reranker) == "string" and p.reranker or nil)
        end
        if rec then
          hits = rr.search(rec.artifact, idx, question, k, { n = p.candidates, vector = query.vector })
          mode = ("%s+reranker@%d"):format(mode, rec.version)
        else
          hits = idx:search(query)
        end
        local passages = {}
        for i, h in ipairs(hits) do
          passages[i] = { id = h.id, text = h.text, source = h.source or h.meta.source,
                          heading = h.meta.heading, score = h.score }
        end
        return { question = question, retrieval = mode, passages = passages }
      end,
    },
    trellis.task {
      name = "label_uncertain",
      after = { "retrieve" },
      run = function(ctx, retrieved)
        local n = math.tointeger(ctx.params.request_labels) or 0
        if n <= 0 then return { requested = 0 } end
        local al = require "trellis.al"
        local ids = al.request_top_k(retrieved, n, function(r)
          local scores = {}
          for i, h in ipairs(r.passages) do scores[i] = h.score end
          return al.margin(scores)
        end, function(r, u)
          local sources = {}
          for i, h in ipairs(r.passages) do sources[i] = h.source end
          return { question = r.question, sources = sources, retrieval = r.retrieval }
        end)
        ctx.log(("%d questions sent to the labelling queue"):format(#ids))
        return { requested = #ids, item_ids = ids }
      end,
    },
    trellis.task {
      name = "answer",
      map = "retrieve",
      run = function(ctx, r)
        local p = ctx.params
        local prompt, llm = require "trellis.prompt", require "trellis.llm"
        local tpl = prompt.template { name = "rag-answer", version = "1", text = TEMPLATE }
        local blocks, context, sources = {}, {}, {}
        for i, h in ipairs(r.passages) do
          local where = h.heading and (h.source .. " — " .. h.heading) or h.source
          blocks[i] = ("[%s] (%s)\n%s"):format(h.source, where, h.text)
          context[i] = { text = h.text, source = h.source }
          sources[i] = { source = h.source, heading = h.heading, score = h.score }
        end
        if #blocks == 0 then blocks[1] = "(no passage matched the question)" end
        local res = llm.chat {
          messages = {
            { role = "system", content = tpl:render { passages = table.concat(blocks, "\n\n") } },
            { role = "user", content = r.question },
          },
          model = p.model, provider = p.provider, max_tokens = p.max_tokens,
          temperature = p.temperature, top_k = p.top_k, context = context,
          prompt_digest = tpl.digest,
        }
        -- The sources the answer cites: [name] markers that name a retrieved
        -- source, in order of first mention.
        local known, cited, citations = {}, {}, {}
        for _, s in ipairs(sources) do known[s.source] = true end
        for name in res.text:gmatch("%[([^%]\n]+)%]") do
          if known[name] and not cited[name] then
            cited[name] = true
            citations[#citations + 1] = name
          end
        end
        ctx.log(("answered with %s/%s from %d passages (%s), citing %d")
                :format(res.provider, res.model, #sources, r.retrieval, #citations))
        return {
          question = r.question, answer = res.text, sources = sources, citations = citations,
          retrieval = r.retrieval, provider = res.provider, model = res.model,
          usage = res.usage, cost = res.cost, latency_ms = res.latency_ms,
          prompt = { name = tpl.name, version = tpl.version, digest = tpl.digest },
        }
      end,
    },
  },
  -- The reference loop's start: when people rate enough answers of the last
  -- hour and too many are thumbs down, retrain the reranker on that feedback
  -- and its labels (retrain_reranker.lua reads them; `trigger` in its params
  -- names this pipeline and the statistics that fired). At most one
  -- retraining an hour; it must be registered before this pipeline.
  triggers = {
    trellis.trigger {
      name = "retrain", on = "feedback",
      when = function(stats)
        local w = stats.feedback.window
        return w.count >= 200 and w.negative_rate > 0.1
      end,
      run = "retrain_reranker", params = { model = "reranker" }, cooldown = 3600,
    },
  },
}
