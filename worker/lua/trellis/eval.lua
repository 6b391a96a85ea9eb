-- trellis.eval: answer and retrieval metrics, and an LLM-as-judge helper.
--
-- Answers (pred, ref; ref may be an array of references: the best is kept):
--   exact_match  1 or 0 after normalisation: lowercase, ASCII punctuation
--                removed, the articles a/an/the removed, spaces collapsed
--                (the SQuAD convention)
--   f1           token F1 over the same normalised tokens (bag of words)
--   rouge_l      ROUGE-L F1 (beta = 1) from the longest common subsequence of
--                word tokens; also returns precision and recall
--   bleu         sentence BLEU up to 4-grams (uniform weights), brevity
--                penalty against the closest reference length; n-gram
--                precisions for n >= 2 are smoothed by add-one (Lin and Och
--                2004: (matches + 1) / (total + 1)); unigram precision is not
--                smoothed, so no word in common gives 0
-- Retrieval (retrieved: array of ids, best first; relevant: array of ids,
-- or a table id -> graded gain):
--   recall_at_k, reciprocal_rank, mrr (mean over queries), ndcg_at_k (gain
--   rel / log2(rank + 1), normalised by the ideal ordering)
-- judge: builds a rubric prompt, asks a judge model, parses a score.
local native = ...

local M = {}

-- Tokens ------------------------------------------------------------------

local ARTICLES = { a = true, an = true, the = true }

function M.normalize(s)
  s = tostring(s or ""):lower():gsub("%p", " ")
  local words = {}
  for w in s:gmatch("%S+") do
    if not ARTICLES[w] then words[#words + 1] = w end
  end
  return table.concat(words, " ")
end

local function squad_tokens(s)
  local t = {}
  for w in M.normalize(s):gmatch("%S+") do t[#t + 1] = w end
  return t
end

-- Lowercased words: runs of letters, digits and non-ASCII bytes.
function M.tokens(s)
  local t = {}
  for w in tostring(s or ""):lower():gmatch("[%w\128-\255]+") do t[#t + 1] = w end
  return t
end

local function best(ref, f)
  if type(ref) ~= "table" then return f(ref) end
  local b, extra
  for _, r in ipairs(ref) do
    local v, e = f(r)
    if b == nil or v > b then b, extra = v, e end
  end
  return b or 0, extra
end

-- Answers -----------------------------------------------------------------

function M.exact_match(pred, ref)
  local p = M.normalize(pred)
  return best(ref, function(r) return p == M.normalize(r) and 1 or 0 end)
end

function M.f1(pred, ref)
  local pt = squad_tokens(pred)
  return best(ref, function(r)
    local rt = squad_tokens(r)
    if #pt == 0 or #rt == 0 then return (#pt == 0 and #rt == 0) and 1 or 0 end
    local counts, common = {}, 0
    for _, w in ipairs(rt) do counts[w] = (counts[w] or 0) + 1 end
    for _, w in ipairs(pt) do
      if (counts[w] or 0) > 0 then
        counts[w] = counts[w] - 1
        common = common + 1
      end
    end
    if common == 0 then return 0 end
    local p, r2 = common / #pt, common / #rt
    return 2 * p * r2 / (p + r2)
  end)
end

local function lcs(a, b)
  local prev, cur = {}, {}
  for j = 0, #b do prev[j] = 0 end
  for i = 1, #a do
    cur[0] = 0
    for j = 1, #b do
      if a[i] == b[j] then
        cur[j] = prev[j - 1] + 1
      else
        cur[j] = math.max(prev[j], cur[j - 1])
      end
    end
    prev, cur = cur, prev
  end
  return prev[#b]
end

-- rouge_l(pred, ref) -> f1, {precision=, recall=}
function M.rouge_l(pred, ref)
  local pt = M.tokens(pred)
  return best(ref, function(r)
    local rt = M.tokens(r)
    local l = (#pt > 0 and #rt > 0) and lcs(pt, rt) or 0
    if l == 0 then return 0, { precision = 0, recall = 0 } end
    local p, rc = l / #pt, l / #rt
    return 2 * p * rc / (p + rc), { precision = p, recall = rc }
  end)
end

local function ngrams(t, n)
  local c, total = {}, 0
  for i = 1, #t - n + 1 do
    local g = table.concat(t, "\0", i, i + n - 1)
    c[g] = (c[g] or 0) + 1
    total = total + 1
  end
  return c, total
end

-- bleu(pred, refs, {max_n = 4}) -> score, {precisions=, bp=, length=, ref_length=}
function M.bleu(pred, refs, opts)
  local max_n = (opts and opts.max_n) or 4
  if type(refs) ~= "table" then refs = { refs } end
  local ct = M.tokens(pred)
  local rts = {}
  for i, r in ipairs(refs) do rts[i] = M.tokens(r) end
  local c = #ct
  if c == 0 or #rts == 0 then return 0, { precisions = {}, bp = 0, length = c, ref_length = 0 } end
  -- The closest reference length, the shorter one on a tie.
  local rlen
  for _, rt in ipairs(rts) do
    local d = math.abs(#rt - c)
    if rlen == nil or d < math.abs(rlen - c) or (d == math.abs(rlen - c) and #rt < rlen) then
      rlen = #rt
    end
  end
  local precisions, logsum = {}, 0
  for n = 1, max_n do
    local cand, total = ngrams(ct, n)
    local maxref = {}
    for _, rt in ipairs(rts) do
      for g, k in pairs((ngrams(rt, n))) do
        if k > (maxref[g] or 0) then maxref[g] = k end
      end
    end
    local m = 0
    for g, k in pairs(cand) do m = m + math.min(k, maxref[g] or 0) end
    local p
    if n == 1 then
      p = m / total
    else
      p = (m + 1) / (total + 1)
    end
    precisions[n] = p
    if p == 0 then return 0, { precisions = precisions, bp = 0, length = c, ref_length = rlen } end
    logsum = logsum + math.log(p) / max_n
  end
  local bp = c > rlen and 1 or math.exp(1 - rlen / c)
  return bp * math.exp(logsum), { precisions = precisions, bp = bp, length = c, ref_length = rlen }
end

-- Retrieval ---------------------------------------------------------------

-- Relevant ids as a table id -> gain (an array of ids gives gain 1 each).
local function gains(relevant)
  local g, n = {}, 0
  for k, v in pairs(relevant) do
    if math.type(k) == "integer" and type(v) ~= "number" then
      g[v] = 1
    else
      g[k] = v
    end
  end
  for _, v in pairs(g) do if v > 0 then n = n + 1 end end
  return g, n
end

function M.recall_at_k(retrieved, relevant, k)
  local g, n = gains(relevant)
  if n == 0 then return 0 end
  local hit = 0
  for i = 1, math.min(k or #retrieved, #retrieved) do
    if (g[retrieved[i]] or 0) > 0 then
      hit = hit + 1
      g[retrieved[i]] = 0 -- a duplicate id counts once
    end
  end
  return hit / n
end

function M.reciprocal_rank(retrieved, relevant)
  local g = gains(relevant)
  for i, id in ipairs(retrieved) do
    if (g[id] or 0) > 0 then return 1 / i end
  end
  return 0
end

-- mrr({ {retrieved=, relevant=}, ... }) -> mean reciprocal rank
function M.mrr(runs)
  if #runs == 0 then return 0 end
  local s = 0
  for _, r in ipairs(runs) do s = s + M.reciprocal_rank(r.retrieved, r.relevant) end
  return s / #runs
end

local function log2(x) return math.log(x) / math.log(2) end

function M.ndcg_at_k(retrieved, relevant, k)
  local g = gains(relevant)
  k = k or #retrieved
  local dcg, seen = 0, {}
  for i = 1, math.min(k, #retrieved) do
    local id = retrieved[i]
    if not seen[id] then
      seen[id] = true
      dcg = dcg + (g[id] or 0) / log2(i + 1)
    end
  end
  local ideal = {}
  for _, v in pairs(g) do if v > 0 then ideal[#ideal + 1] = v end end
  table.sort(ideal, function(a, b) return a > b end)
  local idcg = 0
  for i = 1, math.min(k, #ideal) do idcg = idcg + ideal[i] / log2(i + 1) end
  if idcg == 0 then return 0 end
  return dcg / idcg
end

-- LLM as judge ------------------------------------------------------------

M.DEFAULT_RUBRIC = "Score how well the answer responds to the question, using the reference "
  .. "answer as ground truth: the highest score for a correct and complete answer, the lowest "
  .. "for a wrong or unsupported one."

-- judge_prompt{question=, answer=, reference=, rubric=, scale={lo, hi}} -> text
function M.judge_prompt(o)
  local lo, hi = (o.scale or {})[1] or 1, (o.scale or {})[2] or 5
  local parts = {
    "You are grading an answer.",
    "Rubric: " .. (o.rubric or M.DEFAULT_RUBRIC),
    ("Give an integer score from %d to %d."):format(lo, hi),
    "Question: " .. tostring(o.question or ""),
  }
  if o.reference ~= nil then parts[#parts + 1] = "Reference answer: " .. tostring(o.reference) end
  parts[#parts + 1] = "Answer: " .. tostring(o.answer or "")
  parts[#parts + 1] = 'Reply with one line of reasoning, then a last line "Score: N".'
  return table.concat(parts, "\n")
end

-- The score in a judge's reply: the last "Score: N", else the last number
-- in range; nil when there is none.
function M.parse_score(text, lo, hi)
  lo, hi = lo or 1, hi or 5
  local found
  for n in tostring(text):gmatch("[Ss]core%s*[:=]%s*(%-?%d+%.?%d*)") do found = tonumber(n) end
  if found and found >= lo and found <= hi then return found end
  found = nil
  for n in tostring(text):gmatch("%-?%d+%.?%d*") do
    local v = tonumber(n)
    if v and v >= lo and v <= hi then found = v end
  end
  return found
end

-- judge{question=, answer=, reference=, rubric=, scale={1, 5}, judge=fn,
--       model=, provider=} -> {score=, normalized=, reply=, prompt_digest=}
-- judge(prompt) -> reply text; without it, trellis.llm.chat answers with
-- temperature 0 (model and provider passed through). A reply with no score
-- raises "eval_no_score".
function M.judge(o)
  local lo, hi = (o.scale or {})[1] or 1, (o.scale or {})[2] or 5
  local prompt = M.judge_prompt(o)
  local ask = o.judge
  if ask == nil then
    local ok, llm = pcall(require, "trellis.llm")
    if not ok then error("eval.judge needs a judge function or trellis.llm", 2) end
    ask = function(p)
      return llm.chat({ messages = { { role = "user", content = p } }, temperature = 0,
                        max_tokens = 256, model = o.model, provider = o.provider }).text
    end
  end
  local reply = ask(prompt)
  local score = M.parse_score(reply, lo, hi)
  if score == nil then
    error("eval_no_score: the judge's reply holds no score from " .. lo .. " to " .. hi, 2)
  end
  return { score = score, normalized = hi > lo and (score - lo) / (hi - lo) or 0, reply = reply,
           prompt_digest = native.sha256(prompt) }
end

return M
