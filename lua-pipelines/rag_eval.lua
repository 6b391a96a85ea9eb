-- rag_eval.lua: a labelled question set through retrieval and generation,
-- scored per question and on average.
--
--   questions  ->  evaluate (one instance per question, map)  ->  report
--
-- `questions` reads a JSON Lines file, one object per line:
--   {"id": "q1", "question": "...", "answer": "..." (or an array of accepted
--    answers), "sources": ["rag.md"], "sections": ["rag.md#trellis.index"]}
-- `sources` are the files (relative to the ingested folder) that hold the
-- answer; `sections` (optional) are "file#heading" of the chunks that hold it.
-- `evaluate` retrieves and answers each question as rag_answer.lua does, and
-- scores it:
--   retrieval, at the file level: the distinct sources of the top k passages,
--     in rank order, against `sources`: recall@k, reciprocal rank (MRR when
--     averaged), nDCG@k; and section_recall@k against `sections`
--   answer: exact match, token F1 and ROUGE-L (trellis.eval) of the answer
--     text against `answer`. The answer text is the model's reply without its
--     [source] citations; for the extractive provider, its sentences.
-- `report` averages every metric over the questions.
--
-- Params:
--   questions  the JSON Lines file ("lua-pipelines/data/questions.jsonl",
--              relative to the worker's working folder, inside
--              TRELLIS_INGEST_ROOTS)
--   index      the index built by ingest_docs.lua ("docs.db")
--   k          passages retrieved per question (5)
--   limit      evaluate only the first N questions (all)
--   model, provider, embed_model, embed_provider, max_tokens, temperature,
--   top_k, reranker, candidates   as in rag_answer.lua (the reranker in
--              production ranks the passages when there is one)
--
-- Output: {"report": {n, k, provider, model, retrieval, mean = {recall_at_k,
-- mrr, ndcg_at_k, section_recall_at_k, exact_match, f1, rouge_l}, questions =
-- [{id, question, reference, answer, retrieved, metrics = {...}}, ...]}}.
-- Every metric is in [0, 1]. With the same corpus and question set,
-- retrieval metrics are the same on every run (the ranking is deterministic).
local trellis = require "trellis"

local TEMPLATE = [[You answer questions about the Trellis project from its documentation.
Use only the passages below. Cite each passage you use by its source in brackets,
as in [rag.md]. If the passages do not hold the answer, say that you do not know.

{{passages}}]]

-- The question file's JSON lines, read with the worker's jansson (trellis.json).
-- Returns the value, or raises "json: <what>".
local function json_decode(s)
  local v, why = require("trellis.json").decode(s)
  if v == nil and why then error("json: " .. why, 0) end
  return v
end

-- Reads the question file through trellis.ingest (the file access pipelines
-- have): one text chunk of the whole file, split into lines.
local function read_questions(path)
  local ingest = require "trellis.ingest"
  local dir, name = path:match("^(.*)/([^/]+)$")
  if not dir then dir, name = ".", path end
  if dir == "" then dir = "/" end
  local chunks = ingest.file(dir, name, { format = "text", size = 1 << 24, overlap = 0 })
  if #chunks > 1 then error(("question file '%s' is over 16 MiB"):format(path)) end
  local out = {}
  local n = 0
  for line in ((chunks[1] and chunks[1].text or "") .. "\n"):gmatch("([^\n]*)\n") do
    n = n + 1
    if line:find("%S") then
      local ok, q = pcall(json_decode, line)
      if not ok then error(("%s, line %d: %s"):format(path, n, q)) end
      if type(q) ~= "table" or type(q.question) ~= "string" or q.answer == nil
         or type(q.sources) ~= "table" or #q.sources == 0 then
        error(("%s, line %d: a question needs question, answer and sources"):format(path, n))
      end
      out[#out + 1] = { id = q.id and tostring(q.id) or ("line " .. n), question = q.question,
                        answer = q.answer, sources = q.sources, sections = q.sections or {} }
    end
  end
  if #out == 0 then error(("question file '%s' holds no question"):format(path)) end
  return out
end

-- The text scored against the reference: the reply without [source] markers;
-- for the extractive provider, its sentences.
local function answer_text(res)
  if res.provider == "extractive" or res.model == "extractive" then
    local parts = {}
    for i, s in ipairs(res.sources or {}) do parts[i] = s.text end
    return table.concat(parts, " ")
  end
  return (res.text:gsub("%s*%[[^%]\n]*%]", ""))
end

local METRICS = { "recall_at_k", "mrr", "ndcg_at_k", "section_recall_at_k", "exact_match", "f1",
                  "rouge_l" }

return trellis.pipeline {
  name = "rag_eval",
  version = "1",
  extra_params = true, -- optional params (nil unless a run gives them)
  params = {
    questions = "lua-pipelines/data/questions.jsonl", index = "docs.db", k = 5,
    max_tokens = 400, temperature = 0, top_k = 3,
  },
  tasks = {
    trellis.task {
      name = "questions",
      run = function(ctx)
        local qs = read_questions(ctx.params.questions)
        local limit = math.tointeger(ctx.params.limit)
        if limit and limit < #qs then
          for i = #qs, limit + 1, -1 do qs[i] = nil end
        end
        ctx.log("read", #qs, "questions from", ctx.params.questions)
        return qs
      end,
    },
    trellis.task {
      name = "evaluate",
      map = "questions",
      run = function(ctx, q)
        local p = ctx.params
        local index, llm = require "trellis.index", require "trellis.llm"
        local prompt, eval = require "trellis.prompt", require "trellis.eval"
        local k = math.tointeger(p.k) or 5

        local idx <close> = index.open(p.index)
        if idx:count() == 0 then
          error(("index '%s' is empty: run ingest_docs.lua first"):format(p.index))
        end
        local query = { query = q.question, k = k }
        local mode = "bm25"
        if idx:dim() > 0 then
          query.vector = llm.embed({ input = { q.question }, model = p.embed_model,
                                     provider = p.embed_provider }).vectors[1]
          mode = "hybrid"
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
          hits = rr.search(rec.artifact, idx, q.question, k, { n = p.candidates, vector = query.vector })
          mode = ("%s+reranker@%d"):format(mode, rec.version)
        else
          hits = idx:search(query)
        end

        local files, seen, sections = {}, {}, {}
        local blocks, context = {}, {}
        for i, h in ipairs(hits) do
          local src = h.source or h.meta.source
          if not seen[src] then
            seen[src] = true
            files[#files + 1] = src
          end
          sections[i] = src .. "#" .. (h.meta.heading or "")
          local where = h.meta.heading and (src .. " — " .. h.meta.heading) or src
          blocks[i] = ("[%s] (%s)\n%s"):format(src, where, h.text)
          context[i] = { text = h.text, source = src }
        end
        if #blocks == 0 then blocks[1] = "(no passage matched the question)" end

        local tpl = prompt.template { name = "rag-answer", version = "1", text = TEMPLATE }
        local res = llm.chat {
          messages = {
            { role = "system", content = tpl:render { passages = table.concat(blocks, "\n\n") } },
            { role = "user", content = q.question },
          },
          model = p.model, provider = p.provider, max_tokens = p.max_tokens,
          temperature = p.temperature, top_k = p.top_k, context = context,
        }
        local pred = answer_text(res)
        local m = {
          recall_at_k = eval.recall_at_k(files, q.sources, k),
          mrr = eval.reciprocal_rank(files, q.sources),
          ndcg_at_k = eval.ndcg_at_k(files, q.sources, k),
          section_recall_at_k = #q.sections > 0 and eval.recall_at_k(sections, q.sections, k)
                                or nil,
          exact_match = eval.exact_match(pred, q.answer),
          f1 = eval.f1(pred, q.answer),
          rouge_l = (eval.rouge_l(pred, q.answer)),
        }
        return {
          id = q.id, question = q.question, sources = q.sources, reference = q.answer,
          answer = pred,
          retrieved = files, retrieval = mode, provider = res.provider, model = res.model,
          prompt_digest = tpl.digest, metrics = m,
        }
      end,
    },
    trellis.task {
      name = "report",
      after = { "evaluate" },
      run = function(ctx, results)
        local sum, n = {}, {}
        for _, r in ipairs(results) do
          for _, name in ipairs(METRICS) do
            local v = r.metrics[name]
            if v then
              sum[name] = (sum[name] or 0) + v
              n[name] = (n[name] or 0) + 1
            end
          end
        end
        local mean = {}
        for _, name in ipairs(METRICS) do
          if n[name] then mean[name] = sum[name] / n[name] end
        end
        local first = results[1] or {}
        ctx.log(("%d questions: recall@%s %.3f, MRR %.3f, nDCG %.3f, EM %.3f, F1 %.3f, "
                 .. "ROUGE-L %.3f"):format(#results, tostring(ctx.params.k),
                 mean.recall_at_k or 0, mean.mrr or 0, mean.ndcg_at_k or 0,
                 mean.exact_match or 0, mean.f1 or 0, mean.rouge_l or 0))
        return {
          n = #results, k = math.tointeger(ctx.params.k) or 5, provider = first.provider,
          model = first.model, retrieval = first.retrieval, prompt_digest = first.prompt_digest,
          mean = mean, questions = results,
        }
      end,
    },
  },
}
