-- retrain_reranker.lua: the reference feedback loop's retraining run.
--
--   data  ->  train  ->  gate
--
-- `data` takes the training set exported from feedback and labels (params
-- `training`: an array of {question, sources}, what scripts/loop_feedback.py
-- export builds from GET /v1/feedback and GET /v1/labels) and its digest,
-- and reads the held-out questions (params `heldout`, a JSON Lines file of
-- lua-pipelines/data/). A training question that is also held out is
-- dropped, so the evaluation never sees a question the model trained on.
-- `train` fits a logistic-regression reranker (trellis.rerank) over the
-- retrieval features of each question's candidates: BM25 and vector scores,
-- their ranks, the question's words in the chunk's heading, file name and
-- text, and how many of the top BM25 hits share the chunk's file. A
-- candidate is relevant when its file is one of the question's sources.
-- `gate` evaluates on the held-out questions: the retrieval without a
-- reranker (hybrid RRF, what rag_answer does without one) and the new model,
-- by file-level MRR and recall@k as rag_eval.lua computes them; registers
-- the model (weights inline) with its metrics and lineage (this run, the
-- training data's digest, this pipeline, the parent = the production
-- version it was compared with), and promotes it through the gate
-- (trellis.registry.gate): only when its held-out MRR beats the
-- champion's by `margin`, or, when there is no champion, the MRR of the
-- retrieval without a reranker by `margin`.
--
-- Params: training (array; without it, `from` or the trigger's pipeline:
-- the pipeline whose feedback and labels build it), heldout (file), index ("docs.db"), model
-- ("reranker"), k (5), candidates (20 per list), margin (0.01), epochs
-- (300), rate (0.5), l2 (1e-4), embed_model, embed_provider.
--
-- Output: {"gate": {version, promoted, reason, data_digest, n_train,
-- n_heldout, baseline = {mrr, recall_at_k}, baseline_one_per_file = {mrr,
-- recall_at_k} (no model, one passage per file first), champion = {version, mrr,
-- recall_at_k} or nil, challenger = {mrr, recall_at_k}, weights}}.
local trellis = require "trellis"

-- The training set built from a pipeline's feedback and labels, as
-- scripts/loop_feedback.py export builds it through the API: the file a
-- label names, or the one a piece of feedback says is right (its label; for
-- a thumbs up without one, the answer's first source); a label wins over
-- feedback, newer feedback over older. The question of a piece of feedback
-- is the rated answer's (the run's output.answer[index]). A triggered run
-- takes only the oldest `count` pieces of feedback, `count` being the
-- statistics the trigger fired on, so it trains on what made it fire and
-- not on what raced in after. Also returns the index the newest rated run
-- retrieved from (its params.index), the retrieval the feedback was about.
local function training_from_feedback(pipeline, count)
  if type(pipeline) ~= "string" then
    error("params.training, params.from or a trigger is required: where the training set "
          .. "comes from")
  end
  local fb = trellis.feedback.list { pipeline = pipeline, limit = 10000 }
  local runs, out, order, index = {}, {}, {}, nil
  local first = 1 -- the list is newest first
  if math.tointeger(count) and count < #fb then first = #fb - count + 1 end
  local function put(q, src, from)
    if out[q] == nil then order[#order + 1] = q end
    out[q] = { question = q, sources = src, from = from }
  end
  for i = #fb, first, -1 do -- oldest first: newer feedback on a question wins
    local f = fb[i]
    if runs[f.run_id] == nil then
      local r = trellis.feedback.run(f.run_id)
      runs[f.run_id] = r and type(r.output) == "table" and r.output.answer or false
      if r and type(r.params) == "table" and type(r.params.index) == "string" then
        index = r.params.index
      end
    end
    local a = runs[f.run_id] and runs[f.run_id][math.tointeger(f.index) or 0]
    if type(a) == "table" and type(a.question) == "string" then
      local src = type(f.label) == "string" and f.label ~= "" and f.label or nil
      if src == nil and f.score > 0 and a.sources and a.sources[1] then
        src = a.sources[1].source
      end
      if src then put(a.question, { src }, "feedback") end
    end
  end
  for _, it in ipairs(trellis.feedback.labels { pipeline = pipeline, state = "labelled",
                                                limit = 10000 }) do
    if type(it.item) == "table" and type(it.label) == "table" and type(it.label.sources) == "table"
       and type(it.item.question) == "string" then
      put(it.item.question, it.label.sources, "label")
    end
  end
  local t = {}
  for _, q in ipairs(order) do t[#t + 1] = out[q] end
  return t, index
end

-- The question's vector when the index holds vectors (as rag_answer does).
local function vectors(idx, p, questions)
  if idx:dim() == 0 or #questions == 0 then return {} end
  return require("trellis.llm").embed {
    input = questions, model = p.embed_model, provider = p.embed_provider,
  }.vectors
end

local function candidates_of(p, idx, qs)
  local rr = require "trellis.rerank"
  local texts = {}
  for i, q in ipairs(qs) do texts[i] = q.question end
  local vecs = vectors(idx, p, texts)
  local out = {}
  for i, q in ipairs(qs) do
    out[i] = rr.candidates(idx, q.question, { n = p.candidates, vector = vecs[i] })
    -- Let the worker's loop breathe (heartbeats, other tasks) now and then.
    if i % 5 == 0 then trellis.sleep(0.001) end
  end
  return out, vecs
end

local function metrics(files_of, qs, k)
  local eval = require "trellis.eval"
  local mrr, rec = 0, 0
  for i, q in ipairs(qs) do
    local files = files_of(i)
    mrr = mrr + eval.reciprocal_rank(files, q.sources)
    rec = rec + eval.recall_at_k(files, q.sources, k)
  end
  local n = math.max(#qs, 1)
  return { mrr = mrr / n, recall_at_k = rec / n, k = k, n = #qs }
end

local function open_index(p, name)
  local idx = require("trellis.index").open(name)
  if idx:count() == 0 then
    error(("index '%s' is empty: run ingest_docs.lua first"):format(name))
  end
  return idx
end

return trellis.pipeline {
  name = "retrain_reranker",
  version = "1",
  extra_params = true, -- optional params (nil unless a run gives them)
  params = {
    heldout = "lua-pipelines/data/loop_heldout.jsonl", index = "docs.db", model = "reranker",
    k = 5, candidates = 20, margin = 0.01, epochs = 300, rate = 0.5, l2 = 1e-4,
  },
  tasks = {
    trellis.task {
      name = "data",
      run = function(ctx)
        local p = ctx.params
        local rr, prompt = require "trellis.rerank", require "trellis.prompt"
        local index = p.index
        if p.training == nil then
          local from = p.from or (type(p.trigger) == "table" and p.trigger.pipeline)
          local count = type(p.trigger) == "table" and type(p.trigger.stats) == "table"
                        and p.trigger.stats.feedback and p.trigger.stats.feedback.count
          local rated
          p.training, rated = training_from_feedback(from, count)
          index = rated or index
          ctx.log(("training set read from the feedback and labels of %s: %d questions; "
                   .. "index %s"):format(from, #p.training, index))
        end
        if type(p.training) ~= "table" or #p.training == 0 then
          error("params.training: an array of {question, sources} is required "
                .. "(or params.from, or a trigger: the pipeline whose feedback builds it)")
        end
        local heldout = rr.read_jsonl(p.heldout)
        local held = {}
        for _, q in ipairs(heldout) do held[q.question] = true end
        local train, lines, dropped = {}, {}, 0
        for i, e in ipairs(p.training) do
          if type(e) ~= "table" or type(e.question) ~= "string" or type(e.sources) ~= "table"
             or #e.sources == 0 then
            error(("params.training[%d]: {question, sources} expected"):format(i))
          end
          if held[e.question] then
            dropped = dropped + 1
          else
            train[#train + 1] = { question = e.question, sources = e.sources }
            lines[#lines + 1] = e.question .. "\t" .. table.concat(e.sources, ",")
          end
        end
        -- The digest does not depend on the order the export listed them in.
        table.sort(lines)
        local digest = "sha256:" .. prompt.digest(table.concat(lines, "\n"))
        ctx.log(("%d training questions (%d held-out ones dropped), %d held out; data %s")
                :format(#train, dropped, #heldout, digest:sub(1, 19)))
        return { train = train, heldout = heldout, digest = digest, index = index }
      end,
    },
    trellis.task {
      name = "train",
      after = { "data" },
      run = function(ctx, data)
        local p = ctx.params
        local rr = require "trellis.rerank"
        local idx <close> = open_index(p, data.index)
        local t0 = trellis.now()
        local cands = candidates_of(p, idx, data.train)
        ctx.log(("features of %d questions in %.1f s"):format(#data.train, trellis.now() - t0))
        local rows, pos = {}, 0
        for i, q in ipairs(data.train) do
          local rel = {}
          for _, s in ipairs(q.sources) do rel[s] = true end
          for _, c in ipairs(cands[i]) do
            local y = rel[c.source] and 1 or 0
            pos = pos + y
            rows[#rows + 1] = { x = c.x, y = y }
          end
        end
        t0 = trellis.now()
        local model = rr.train(rows, { epochs = p.epochs, rate = p.rate, l2 = p.l2,
                                       pause = function() trellis.sleep(0.001) end })
        ctx.log(("gradient descent: %d epochs in %.1f s"):format(model.epochs, trellis.now() - t0))
        local k = math.tointeger(p.k) or 5
        local m = metrics(function(i) return rr.files(rr.rank(model, cands[i]), math.huge) end,
                          data.train, k)
        ctx.log(("trained on %d candidates (%d relevant) of %d questions: loss %.4f, "
                 .. "training MRR %.3f"):format(#rows, pos, #data.train, model.train_loss, m.mrr))
        model.n_rows, model.n_relevant, model.train_mrr = #rows, pos, m.mrr
        return model
      end,
    },
    trellis.task {
      name = "gate",
      after = { "data", "train" },
      run = function(ctx, data, model)
        local p = ctx.params
        local rr = require "trellis.rerank"
        local k = math.tointeger(p.k) or 5
        local idx <close> = open_index(p, data.index)
        local cands, vecs = candidates_of(p, idx, data.heldout)
        -- Without a reranker: the first k passages of the hybrid (or BM25) search.
        local baseline = metrics(function(i)
          local q = { query = data.heldout[i].question, k = k, vector = vecs[i] }
          return rr.files(idx:search(q), k)
        end, data.heldout, k)
        -- The same, one passage per file first (as the reranker picks its
        -- passages): how much of a gain comes from that choice alone.
        local diversified = metrics(function(i)
          local hits = idx:search { query = data.heldout[i].question, k = 50, vector = vecs[i] }
          for _, h in ipairs(hits) do h.source = h.source or h.meta.source end
          return rr.files(rr.top(hits, k), k)
        end, data.heldout, k)
        local function evaluate(weights)
          return metrics(function(i)
            return rr.files(rr.top(rr.rank(weights, cands[i]), k), k)
          end, data.heldout, k)
        end
        local mine = evaluate(model)
        local champion = trellis.registry.get(p.model .. "@production")
        local version = trellis.registry.register {
          name = p.model, artifact = model,
          metrics = { heldout_mrr = mine.mrr, heldout_recall_at_k = mine.recall_at_k, k = k,
                      n_heldout = #data.heldout, n_train = #data.train,
                      baseline_mrr = baseline.mrr, baseline_recall_at_k = baseline.recall_at_k,
                      train_mrr = model.train_mrr },
          lineage = { data_digest = data.digest, parent = champion and champion.version or nil },
          tags = { kind = "logistic-reranker", features = table.concat(model.features, ",") },
        }
        local scores = {}
        local g = trellis.registry.gate {
          name = p.model, challenger = version, champion_alias = "production", metric = "mrr",
          margin = p.margin, baseline = baseline,
          evaluate = function(rec)
            local m = evaluate(rec.artifact)
            scores[rec.version] = m
            return m
          end,
        }
        ctx.log(g.reason)
        local champ = g.champion and scores[g.champion.version]
        return {
          version = version, promoted = g.promoted, reason = g.reason, data_digest = data.digest,
          n_train = #data.train, n_heldout = #data.heldout,
          baseline = baseline, baseline_one_per_file = diversified, challenger = mine,
          champion = champ and { version = g.champion.version, mrr = champ.mrr,
                                 recall_at_k = champ.recall_at_k } or nil,
          weights = model.weights, bias = model.bias, features = model.features,
        }
      end,
    },
  },
}
