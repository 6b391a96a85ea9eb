-- The feedback loop's calls from tasks (tests/e2e/test_loop_calls.sh):
-- label requests through trellis.al, and the registry with its gate.
local trellis = require "trellis"
return trellis.pipeline {
  name = "e2e-loop-calls", version = "1",
  params = { model = "e2e-model" },
  tasks = {
    trellis.task { name = "label", run = function(ctx)
      local al = require "trellis.al"
      -- Retrieval scores of four questions; margins 1 - (s1 - s2) / s1:
      -- q1 1 - 8/10 = 0.2, q2 1 - 1/5 = 0.8, q3 1 - 0 = 1, q4 1 - 3/4 = 0.25.
      local items = {
        { q = "q1", scores = { 10, 2 } }, { q = "q2", scores = { 5, 4 } },
        { q = "q3", scores = { 3, 3 } }, { q = "q4", scores = { 4, 1 } },
      }
      local ids = al.request_top_k(items, 2, function(it) return al.margin(it.scores) end,
                                   function(it, u) return { question = it.q, u = u } end)
      local one = trellis.feedback.request_label { item = "plain", uncertainty = 0.01 }
      return { ids = ids, one = one }
    end },
    trellis.task { name = "registry", run = function(ctx)
      local reg, m = trellis.registry, ctx.params.model
      local out = { before = reg.get(m .. "@production") == nil }
      local score = { 0.50, 0.505, 0.60 }
      local function evaluate(rec) return { mrr = score[rec.version] } end
      local gates = {}
      for i = 1, 3 do
        local v = reg.register {
          name = m, artifact = { weights = { i, 2 * i } }, metrics = { mrr = score[i] },
          lineage = { data_digest = "sha256:abc" .. i, parent = i > 1 and i - 1 or nil },
          tags = { kind = "test" },
        }
        assert(v == i, "version " .. tostring(v))
        local g = reg.gate { name = m, challenger = v, metric = "mrr", margin = 0.01,
                             evaluate = evaluate }
        gates[i] = { promoted = g.promoted, reason = g.reason }
      end
      out.gates = gates
      local prod = reg.get(m .. "@production")
      out.production = prod.version
      out.weights = prod.artifact.weights
      out.lineage = prod.lineage
      out.v2 = reg.get(m .. "@2").metrics.mrr
      out.missing = reg.get(m .. "@99") == nil
      local ok, err = pcall(reg.get, "no at sign")
      out.bad_ref = not ok and err or "no error"
      ok, err = pcall(reg.promote, { name = m, alias = "production", version = 42 })
      out.bad_promote = not ok and err or "no error"
      local rb = reg.promote { name = m, alias = "production", version = 1, reason = "rollback" }
      out.rollback_from = rb.from
      return out
    end },
  },
}
