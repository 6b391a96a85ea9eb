-- trellis.rerank: a learned reranker over retrieval features, the model the
-- reference feedback loop trains (lua-pipelines/retrain_reranker.lua) and
-- rag_answer.lua / rag_eval.lua use once one is promoted.
--
--   rr.candidates(idx, question [, {n = 20, vector = v}])
--       the union of the top n BM25 and top n vector hits, each with its
--       features (rr.FEATURES): BM25 score over the query's best, 1/rank in
--       each list, the cosine, the share of the question's words in the
--       chunk's heading, in its file name and in its text, and the share of
--       the top-10 BM25 and vector hits that come from the chunk's file, and
--       the best BM25 score of the chunk's file.
--   rr.score(model, cand)          the model's probability that cand is relevant
--   rr.rank(model, cands)          cands sorted by it (ties: BM25 rank); each
--       gets score = that probability, so that a ranked candidate reads like
--       an idx:search hit {id, text, source, score, meta}
--   rr.search(model, idx, question, k [, {n, vector}])  candidates, ranked, top k
--   rr.production([ref])           trellis.registry.get(ref or
--       "reranker@production") in a task, or nil
--   rr.top(ranked, k [, per_file])  the first k, at most per_file (1) per file
--       while other files remain (then the rest, in order)
--   rr.files(cands, k)             the distinct files of the first hits, in order
--   rr.train(rows, opts)           logistic regression by batch gradient
--       descent: rows = {{x = features, y = 0|1}}, opts = {epochs = 300,
--       rate = 0.5, l2 = 1e-4, pause = function}; returns the model {kind,
--       features, weights, bias}. pause (trellis.sleep(0.001) in a task; 0 would not reach the loop's I/O) is
--       called every epoch: a worker runs its tasks on one loop, and a
--       task that computes for seconds without yielding stalls its
--       heartbeats until the scheduler presumes the worker dead.
--   rr.words(text)                 the lowercased content words, as features see them
--   rr.json_decode(s)              JSON text to a Lua value (null is nil)
local M = {}

M.FEATURES = { "bm25", "bm25_rr", "vec", "vec_rr", "heading", "file", "coverage", "file_support",
               "file_support_vec", "file_best" }

local STOP = {}
for w in ([[the and for are with that this from into not but can its has have was were will
  what when where which who how why does did done you your any all each one two per than then
  there their them they been being also only more most other such use used uses using via
  about after before over under same own just let get gets given]]):gmatch("%a+") do
  STOP[w] = true
end

function M.words(text)
  local out, seen = {}, {}
  for w in tostring(text or ""):lower():gmatch("[%a][%w_]+") do
    if #w >= 3 and not STOP[w] and not seen[w] then
      seen[w] = true
      out[#out + 1] = w
    end
  end
  return out
end

local function share(qwords, set)
  if #qwords == 0 then return 0 end
  local n = 0
  for _, w in ipairs(qwords) do if set[w] then n = n + 1 end end
  return n / #qwords
end

local function set_of(text)
  local s = {}
  for _, w in ipairs(M.words(text)) do s[w] = true end
  return s
end

function M.candidates(idx, question, opts)
  opts = opts or {}
  local n = math.tointeger(opts.n) or 20
  local by_id, list = {}, {}
  local function add(h, rank, kind)
    local c = by_id[h.id]
    if not c then
      c = { id = h.id, text = h.text, source = h.source or (h.meta and h.meta.source),
            heading = h.meta and h.meta.heading, meta = h.meta or {}, bm25_rank = math.huge }
      by_id[h.id] = c
      list[#list + 1] = c
    end
    if kind == "bm25" then c.bm25, c.bm25_rank = h.score, rank
    else c.vec, c.vec_rank = h.score, rank end
  end
  local bm = idx:search { query = question, k = n, mode = "bm25" }
  for i, h in ipairs(bm) do add(h, i, "bm25") end
  if opts.vector then
    for i, h in ipairs(idx:search { vector = opts.vector, k = n, mode = "vector" }) do
      add(h, i, "vec")
    end
  end
  local top = bm[1] and bm[1].score or 0
  local support, support_vec, best = {}, {}, {}
  for _, c in ipairs(list) do
    if c.bm25_rank <= 10 then support[c.source] = (support[c.source] or 0) + 1 end
    if c.vec_rank and c.vec_rank <= 10 then
      support_vec[c.source] = (support_vec[c.source] or 0) + 1
    end
    local b = c.bm25 and top > 0 and c.bm25 / top or 0
    if b > (best[c.source] or 0) then best[c.source] = b end
  end
  local q = M.words(question)
  for _, c in ipairs(list) do
    local file = (c.source or ""):gsub("%.%w+$", ""):gsub("[-_/]", " ")
    c.x = {
      c.bm25 and top > 0 and c.bm25 / top or 0,
      c.bm25 and 1 / c.bm25_rank or 0,
      c.vec and math.max(c.vec, 0) or 0,
      c.vec_rank and 1 / c.vec_rank or 0,
      share(q, set_of(c.heading)),
      share(q, set_of(file)),
      share(q, set_of(c.text)),
      (support[c.source] or 0) / 10,
      (support_vec[c.source] or 0) / 10,
      best[c.source] or 0,
    }
  end
  return list
end

local function sigmoid(z)
  if z >= 0 then return 1 / (1 + math.exp(-z)) end
  local e = math.exp(z)
  return e / (1 + e)
end

function M.score(model, c)
  local z = model.bias or 0
  local w = model.weights
  for j = 1, #w do z = z + w[j] * (c.x[j] or 0) end
  return sigmoid(z)
end

function M.rank(model, cands)
  for _, c in ipairs(cands) do
    c.p = M.score(model, c)
    c.score = c.p
  end
  table.sort(cands, function(a, b)
    if a.p ~= b.p then return a.p > b.p end
    if a.bm25_rank ~= b.bm25_rank then return a.bm25_rank < b.bm25_rank end
    return a.id < b.id
  end)
  return cands
end

-- The first k of ranked with at most per_file (1) passages of one file: the
-- model scores files as much as passages (its file features), so without
-- this the top k would often be k passages of one file.
function M.top(ranked, k, per_file)
  per_file = per_file or 1
  local out, count, rest = {}, {}, {}
  for _, c in ipairs(ranked) do
    local n = count[c.source] or 0
    if n < per_file then
      if #out < k then out[#out + 1] = c end
      count[c.source] = n + 1
    else
      rest[#rest + 1] = c
    end
  end
  for _, c in ipairs(rest) do
    if #out >= k then break end
    out[#out + 1] = c
  end
  return out
end

function M.files(hits, k)
  local files, seen = {}, {}
  for _, h in ipairs(hits) do
    if #files >= (k or math.huge) then break end
    local src = h.source or (h.meta and h.meta.source)
    if src and not seen[src] then
      seen[src] = true
      files[#files + 1] = src
    end
  end
  return files
end

function M.train(rows, opts)
  opts = opts or {}
  local epochs = math.tointeger(opts.epochs) or 300
  local rate = opts.rate or 0.5
  local l2 = opts.l2 or 1e-4
  local d = #M.FEATURES
  local w, b = {}, 0
  for j = 1, d do w[j] = 0 end
  local n = #rows
  if n == 0 then error("rerank.train: no training rows", 2) end
  local loss = 0
  local pause = opts.pause
  for epoch = 1, epochs do
    if pause then pause() end
    local g, gb = {}, 0
    for j = 1, d do g[j] = 0 end
    loss = 0
    for i = 1, n do
      local x, y = rows[i].x, rows[i].y
      local z = b
      for j = 1, d do z = z + w[j] * x[j] end
      local p = sigmoid(z)
      local e = p - y
      for j = 1, d do g[j] = g[j] + e * x[j] end
      gb = gb + e
      loss = loss - (y == 1 and math.log(math.max(p, 1e-12)) or math.log(math.max(1 - p, 1e-12)))
    end
    for j = 1, d do w[j] = w[j] - rate * (g[j] / n + l2 * w[j]) end
    b = b - rate * gb / n
  end
  return { kind = "logistic", features = M.FEATURES, weights = w, bias = b,
           train_loss = loss / n, epochs = epochs, rate = rate, l2 = l2 }
end

function M.search(model, idx, question, k, opts)
  return M.top(M.rank(model, M.candidates(idx, question, opts)), k)
end

function M.production(ref)
  local rec = require("trellis").registry.get(ref or "reranker@production")
  if rec and type(rec.artifact) == "table" and type(rec.artifact.weights) == "table" then
    return rec
  end
  return nil
end

-- JSON text to a Lua value (null is nil), on the worker's jansson (trellis.json).
function M.json_decode(s)
  local v, why = require("trellis.json").decode(s)
  if v == nil and why then error("json: " .. why, 0) end
  return v
end

-- The questions of a JSON Lines file (read through trellis.ingest, the file
-- access pipelines have): {id, question, sources, ...} per line.
function M.read_jsonl(path)
  local ingest = require "trellis.ingest"
  local dir, name = path:match("^(.*)/([^/]+)$")
  if not dir then dir, name = ".", path end
  if dir == "" then dir = "/" end
  local chunks = ingest.file(dir, name, { format = "text", size = 1 << 24, overlap = 0 })
  local text = chunks[1] and chunks[1].text or ""
  local out, n = {}, 0
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    n = n + 1
    if line:find("%S") then
      local ok, v = pcall(M.json_decode, line)
      if not ok then error(("%s, line %d: %s"):format(path, n, v), 2) end
      out[#out + 1] = v
    end
  end
  return out, text
end

return M
