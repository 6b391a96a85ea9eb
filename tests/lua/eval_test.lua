-- trellis.eval: every metric against hand-computed values (arithmetic in
-- the comments), and the judge helper with a judge function.
-- Run by tests/unit/test_lua_modules.c; returns how many checks ran.
local eval = require "trellis.eval"
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

-- Exact match: "The Cat!" -> "the cat " -> articles dropped -> "cat".
eq(eval.exact_match("The Cat!", "cat"), 1, "em normalised")
eq(eval.exact_match("cat", { "dog", "CAT." }), 1, "em best reference")
eq(eval.exact_match("a cat", "dog"), 0, "em miss")
eq(eval.normalize("  The  quick, brown fox. "), "quick brown fox", "normalize")

-- Token F1: pred "cat sat on mat" (4), ref "cat on mat" (3), common 3:
-- P = 3/4, R = 3/3, F1 = 2 * 0.75 * 1 / 1.75 = 0.857142857142857
near(eval.f1("the cat sat on the mat", "a cat on a mat"), 6 / 7, "f1")
eq(eval.f1("", ""), 1, "f1 both empty")
eq(eval.f1("cat", ""), 0, "f1 one empty")
-- Counts are clipped: pred "cat cat" vs ref "cat": common 1, P = 1/2, R = 1, F1 = 2/3.
near(eval.f1("cat cat", "cat"), 2 / 3, "f1 clipped")

-- ROUGE-L: "the cat sat on the mat" vs "the cat is on the mat", 6 tokens each,
-- LCS "the cat on the mat" = 5: P = R = 5/6, F = 5/6.
local f, pr = eval.rouge_l("the cat sat on the mat", "the cat is on the mat")
near(f, 5 / 6, "rouge-l f")
near(pr.precision, 5 / 6, "rouge-l p")
-- "a b c d" vs "b d": LCS 2, P = 2/4, R = 2/2, F = 2 * 0.5 * 1 / 1.5 = 2/3.
near(eval.rouge_l("a b c d", "b d"), 2 / 3, "rouge-l asymmetric")
eq(eval.rouge_l("x", "y"), 0, "rouge-l nothing common")

-- BLEU: identical sentences score 1 (every precision 1, BP 1).
near(eval.bleu("the cat sat on the mat", { "the cat sat on the mat" }), 1, "bleu identical")
-- pred "the cat sat on mat" (c = 5), ref "the cat sat on the mat" (r = 6):
--   p1 = 5/5 = 1 (unsmoothed)
--   p2: 3 of 4 bigrams match ("on mat" does not): (3 + 1) / (4 + 1) = 0.8
--   p3: 2 of 3 trigrams match: (2 + 1) / (3 + 1) = 0.75
--   p4: 1 of 2 4-grams matches: (1 + 1) / (2 + 1) = 2/3
--   BP = exp(1 - 6/5) = 0.818730753077982
--   BLEU = BP * (1 * 0.8 * 0.75 * 2/3)^(1/4) = 0.818730753 * 0.795270729 = 0.651112602664323
local b, parts = eval.bleu("the cat sat on mat", "the cat sat on the mat")
near(b, 0.651112602664323, "bleu")
near(parts.bp, math.exp(-0.2), "bleu brevity penalty")
near(parts.precisions[2], 0.8, "bleu p2")
eq(eval.bleu("zebra", "the cat"), 0, "bleu no unigram in common")
eq(eval.bleu("", "the cat"), 0, "bleu empty")

-- Retrieval. Top 3 of {d3, d1, d7, d2} holds d1 of the relevant {d1, d2, d9}: 1/3;
-- the top 4 hold d1 and d2: 2/3.
near(eval.recall_at_k({ "d3", "d1", "d7", "d2" }, { "d1", "d2", "d9" }, 3), 1 / 3, "recall@3")
near(eval.recall_at_k({ "d3", "d1", "d7", "d2" }, { "d1", "d2", "d9" }, 4), 2 / 3, "recall@4")
eq(eval.recall_at_k({ "d1", "d1" }, { "d1", "d2" }, 2), 0.5, "recall counts a duplicate once")
-- First relevant at rank 2: 1/2. MRR of 1/2, 1 and 0 = 1.5 / 3 = 0.5.
eq(eval.reciprocal_rank({ "d3", "d1" }, { "d1" }), 0.5, "rr")
near(eval.mrr {
  { retrieved = { "d3", "d1" }, relevant = { "d1" } },
  { retrieved = { "a" }, relevant = { "a" } },
  { retrieved = { "x", "y" }, relevant = { "z" } },
}, 0.5, "mrr")
-- nDCG@3, retrieved {d1, d2, d3}, gains d3 = 3, d2 = 2, d4 = 1 (d1 = 0):
--   DCG  = 0/log2(2) + 2/log2(3) + 3/log2(4) = 0 + 1.261859507 + 1.5 = 2.761859507
--   IDCG = 3/log2(2) + 2/log2(3) + 1/log2(4) = 3 + 1.261859507 + 0.5 = 4.761859507
--   nDCG = 2.761859507 / 4.761859507 = 0.579996008492072
near(eval.ndcg_at_k({ "d1", "d2", "d3" }, { d3 = 3, d2 = 2, d4 = 1 }, 3), 0.579996008492072,
     "ndcg graded")
-- Binary relevance, the single relevant id at rank 2: (1/log2(3)) / 1 = 0.630929753571457.
near(eval.ndcg_at_k({ "x", "r" }, { "r" }, 2), 1 / (math.log(3) / math.log(2)), "ndcg binary")
eq(eval.ndcg_at_k({ "x" }, {}, 1), 0, "ndcg nothing relevant")

-- Judge: the prompt carries rubric, question and answer; the last "Score: N" wins.
local seen
local r = eval.judge {
  question = "What is 2+2?", answer = "4", reference = "four", rubric = "Be strict.",
  judge = function(prompt) seen = prompt; return "Score: 2 at first... no.\nScore: 4" end,
}
eq(r.score, 4, "judge score")
near(r.normalized, 0.75, "judge normalised: (4 - 1) / (5 - 1)")
eq(seen:find("Rubric: Be strict.", 1, true) ~= nil, true, "rubric in prompt")
eq(seen:find("Question: What is 2+2?", 1, true) ~= nil, true, "question in prompt")
eq(seen:find("Reference answer: four", 1, true) ~= nil, true, "reference in prompt")
eq(#r.prompt_digest, 64, "prompt digest")
eq(eval.parse_score("I'd say 7 of 10. Score = 9", 1, 10), 9, "parse score")
eq(eval.parse_score("twelve 12, then 3", 1, 5), 3, "parse the last number in range")
local ok, err = pcall(eval.judge, { question = "q", answer = "a", judge = function() return "?" end })
eq(ok, false, "no score fails")
eq(err:find("eval_no_score", 1, true) ~= nil, true, err)
return n
