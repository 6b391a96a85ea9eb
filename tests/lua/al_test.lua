-- trellis.al and the promotion gate of trellis.registry against hand-computed
-- values (arithmetic in the comments). The gate runs on a fake scheduler:
-- the Lua half of trellis.registry (worker/lua/trellis/loop.lua) is loaded
-- with a `call` that keeps a registry in a table.
-- Run by tests/unit/test_lua_modules.c; returns how many checks ran.
local al = require "trellis.al"
local n = 0
local function eq(got, want, what)
  n = n + 1
  if got ~= want then
    error(("%s: expected %s, got %s"):format(what, tostring(want), tostring(got)), 2)
  end
end
local function near(got, want, what)
  n = n + 1
  if type(got) ~= "number" or math.abs(got - want) > 1e-9 then
    error(("%s: expected %.12f, got %s"):format(what, want, tostring(got)), 2)
  end
end

-- Margin: top-1 0.9, top-2 0.6 (order does not matter): 1 - (0.9 - 0.6) / 0.9 = 1/3 -> 2/3.
near(al.margin({ 0.6, 0.3, 0.9 }), 2 / 3, "relative margin")
-- With a scale: 1 - (10 - 8) / 4 = 0.5.
near(al.margin({ 8, 10 }, { scale = 4 }), 0.5, "scaled margin")
near(al.margin({ 10, 2 }, { scale = 4 }), 0, "margin over the scale clips to 0")
eq(al.margin({ 2, 2 }), 1, "a tie is the most uncertain")
eq(al.margin({ 5 }), 0, "one score: nothing competes")
eq(al.margin({}), 1, "no score")

-- Judge on 1..5: 3 -> p 0.5 -> 1; 5 -> p 1 -> 0; 4 -> p 0.75 -> 1 - |1.5 - 1| = 0.5.
eq(al.judge(3), 1, "judge middle")
eq(al.judge(5), 0, "judge sure")
near(al.judge(4), 0.5, "judge 4 of 5")
-- On 0..1: 0.8 -> 1 - |1.6 - 1| = 0.4.
near(al.judge(0.8, { min = 0, max = 1 }), 0.4, "judge probability")
eq(pcall(al.judge, "x"), false, "judge needs a number")

-- Disagreement: "the cat sat" vs "the cat ran": tokens {cat, sat} / {cat, ran},
-- common 1, P = R = 1/2, F1 = 1/2 -> 0.5.
near(al.disagreement("the cat sat", "the cat ran"), 0.5, "disagreement half")
eq(al.disagreement("Paris", "paris."), 0, "same answer")
eq(al.disagreement("a b c", "d e"), 1, "nothing shared")

-- top_k: uncertainties 0.2, 0.9, 0.5, 0.9 -> the two 0.9 (items 2 then 4, ties in order).
local items = { "a", "b", "c", "d" }
local u = { 0.2, 0.9, 0.5, 0.9 }
local top = al.top_k(items, 2, function(_, i) return u[i] end)
eq(#top, 2, "top_k count")
eq(top[1].item, "b", "top_k first")
eq(top[2].item, "d", "top_k tie keeps order")
eq(top[2].uncertainty, 0.9, "top_k uncertainty")
eq(top[2].index, 4, "top_k index")
eq(#al.top_k(items, 0, function() return 1 end), 0, "top_k 0")
eq(#al.top_k(items, 10, function() return 1 end), 4, "top_k over the count")
-- With the margin signal: the item whose scores are closest comes first.
top = al.top_k({ { 9, 1 }, { 5, 4 }, { 3, 3 } }, 1, function(s) return al.margin(s) end)
eq(top[1].index, 3, "top_k by margin")

-- ---- the promotion gate, on a fake registry ----
local versions, aliases, moves = {}, {}, {}
local function fake_call(op, args)
  if op == "registry.get" then
    local name, ref = args.ref:match("^(.-)@(.+)$")
    local v = math.tointeger(tonumber(ref)) or aliases[ref]
    if not v or not versions[v] then
      return 404, { error = { code = "not_found", message = "no such version" } }
    end
    return 200, { name = name, version = v, artifact = versions[v] }
  elseif op == "registry.promote" then
    moves[#moves + 1] = { alias = args.alias, version = args.version, reason = args.reason }
    aliases[args.alias] = args.version
    return 200, { name = args.name, alias = args.alias, version = args.version }
  end
  return 400, { error = { code = "invalid_argument", message = "unexpected " .. op } }
end
local loop = load_embedded("trellis.loop", { call = fake_call })
local gate = loop.registry.gate
local score = { 0.50, 0.505, 0.52 } -- held-out MRR of v1, v2, v3
local evals = 0
local function evaluate(rec) evals = evals + 1 return { mrr = score[rec.version] } end

versions[1] = "w1"
-- No champion, but a baseline (what runs without a model) of 0.495: 0.50 < 0.505, not promoted.
local r = gate { name = "reranker", challenger = 1, metric = "mrr", margin = 0.01,
                 evaluate = evaluate, baseline = { mrr = 0.495 } }
eq(r.promoted, false, "no champion, under the baseline plus margin")
eq(r.reason, "gate: mrr challenger v1 0.5000 vs no model 0.4950 (no champion at 'production'; "
   .. "margin 0.01): not promoted", "reason against the baseline")
eq(aliases.production, nil, "nothing promoted")
r = gate { name = "reranker", challenger = 1, metric = "mrr", margin = 0.01,
                 evaluate = evaluate }
eq(r.promoted, true, "no champion: promoted")
eq(aliases.production, 1, "production is v1")
eq(r.champion, nil, "no champion")
eq(moves[1].reason, "gate: mrr challenger v1 0.5000, no champion at 'production'", "reason v1")

-- v2 is 0.505 against 0.50: 0.505 < 0.50 + 0.01, kept.
versions[2] = "w2"
evals = 0
r = gate { name = "reranker", challenger = 2, metric = "mrr", margin = 0.01, evaluate = evaluate }
eq(r.promoted, false, "under the margin: kept")
eq(evals, 2, "both evaluated")
eq(aliases.production, 1, "production still v1")
eq(#moves, 1, "no alias move")
eq(r.champion.score, 0.50, "champion score")
eq(r.challenger.score, 0.505, "challenger score")

-- v3 is 0.52 >= 0.51: promoted, both scores in the reason.
versions[3] = "w3"
r = gate { name = "reranker", challenger = 3, metric = "mrr", margin = 0.01, evaluate = evaluate }
eq(r.promoted, true, "over the margin: promoted")
eq(aliases.production, 3, "production is v3")
eq(moves[2].reason,
   "gate: mrr challenger v3 0.5200 vs champion v1 0.5000 (margin 0.01): promoted", "reason v3")
-- A plain number from evaluate, and lower-is-better.
versions[4] = "w4"
r = gate { name = "reranker", challenger = 4, lower_is_better = true, margin = 0,
           evaluate = function(rec) return rec.version == 4 and 0.1 or 0.2 end }
eq(r.promoted, true, "lower is better")
eq(r.reason:find("lower is better", 1, true) ~= nil, true, r.reason)
-- The champion itself: nothing to do.
r = gate { name = "reranker", challenger = 4, evaluate = evaluate }
eq(r.promoted, false, "already the champion")
eq(pcall(gate, { name = "reranker", challenger = 9, evaluate = evaluate }), false,
   "unknown challenger")
-- request_label checks its arguments before calling.
eq(pcall(loop.feedback.request_label, { uncertainty = 1 }), false, "label needs an item")
eq(pcall(loop.feedback.request_label, { item = 1, uncertainty = 0 / 0 }), false, "NaN refused")
return n
