-- A feedback trigger for tests/e2e/test_triggers_ha.sh: fires when most feedback is negative.
local trellis = require "trellis"
return trellis.pipeline {
  name = "e2e-ha-watched", version = "1",
  tasks = {
    trellis.task { name = "answer", run = function(ctx) return "an answer" end },
  },
  triggers = {
    trellis.trigger { name = "worse", on = "feedback",
      when = function(stats) return stats.feedback.count >= 3
                                    and stats.feedback.negative_rate > 0.5 end,
      run = "e2e-retrain", params = { model = "ha" } },
  },
}
