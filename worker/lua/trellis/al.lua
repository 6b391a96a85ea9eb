-- trellis.al: active learning. Uncertainty scores in [0, 1] (1: the most
-- uncertain) from three signals, and the pick of the k most uncertain items
-- for the labelling queue (trellis.feedback.request_label).
--
--   al.margin(scores [, opts])  from retrieval: the gap between the best and
--       the second best score. u = 1 - (s1 - s2) / scale, clipped to [0, 1];
--       scale is opts.scale, or |s1| (a relative gap, for scores of any
--       range, such as BM25). One score: 0 (nothing competes); none: 1.
--   al.judge(score [, opts])    from an LLM judge's score on [opts.min,
--       opts.max] (1..5 by default): p = (score - min) / (max - min),
--       u = 1 - |2p - 1|: a judge sure either way gives 0, the middle 1.
--   al.disagreement(a, b)       between two answers (two models, two
--       samples): 1 - token F1 (trellis.eval.f1: lowercased, punctuation
--       and articles removed). Same answer 0, nothing shared 1.
--   al.top_k(items, k, fn)      fn(item, i) -> uncertainty; the k items
--       with the highest, as {item, uncertainty, index}, most uncertain first
--       (ties: the earlier item first).
--   al.request_top_k(items, k, fn [, wrap])  top_k, each sent to the queue
--       with trellis.feedback.request_label (the item, or wrap(item, u));
--       returns the item ids. In tasks only.
local M = {}

local function clip(x)
  if x ~= x then return 1 end
  if x < 0 then return 0 end
  if x > 1 then return 1 end
  return x
end

function M.margin(scores, opts)
  if type(scores) ~= "table" then error("al.margin: an array of scores expected", 2) end
  local s1, s2 = -math.huge, -math.huge
  for i, s in ipairs(scores) do
    if type(s) ~= "number" then error(("al.margin: score %d is not a number"):format(i), 2) end
    if s > s1 then s1, s2 = s, s1 elseif s > s2 then s2 = s end
  end
  if s1 == -math.huge then return 1 end
  if s2 == -math.huge then return 0 end
  local scale = opts and opts.scale or math.abs(s1)
  if scale <= 0 then return 1 end
  return clip(1 - (s1 - s2) / scale)
end

function M.judge(score, opts)
  local lo = opts and opts.min or 1
  local hi = opts and opts.max or 5
  if type(score) ~= "number" or hi <= lo then
    error("al.judge(score [, {min, max}]): a number on a range with max > min expected", 2)
  end
  local p = clip((score - lo) / (hi - lo))
  return clip(1 - math.abs(2 * p - 1))
end

function M.disagreement(a, b)
  return clip(1 - require("trellis.eval").f1(tostring(a or ""), tostring(b or "")))
end

function M.top_k(items, k, fn)
  if type(items) ~= "table" or type(fn) ~= "function" then
    error("al.top_k(items, k, uncertainty_fn) expected", 2)
  end
  k = math.tointeger(k) or error("al.top_k: k must be an integer", 2)
  local scored = {}
  for i, item in ipairs(items) do
    local u = fn(item, i)
    if type(u) ~= "number" or u ~= u then
      error(("al.top_k: the uncertainty of item %d is not a number"):format(i), 2)
    end
    scored[#scored + 1] = { item = item, uncertainty = u, index = i }
  end
  table.sort(scored, function(x, y)
    if x.uncertainty ~= y.uncertainty then return x.uncertainty > y.uncertainty end
    return x.index < y.index
  end)
  for i = #scored, math.max(k, 0) + 1, -1 do scored[i] = nil end
  return scored
end

function M.request_top_k(items, k, fn, wrap)
  local trellis = require "trellis"
  local ids = {}
  for i, e in ipairs(M.top_k(items, k, fn)) do
    ids[i] = trellis.feedback.request_label {
      item = wrap and wrap(e.item, e.uncertainty) or e.item, uncertainty = e.uncertainty,
    }
  end
  return ids
end

return M
