-- A pipeline whose feedback and labels drive triggers (tests/e2e/test_triggers.sh).
local trellis = require "trellis"
return trellis.pipeline {
  name = "e2e-watched", version = "1",
  params = { question = "?" },
  tasks = {
    trellis.task { name = "answer", run = function(ctx)
      return { answer = "an answer to " .. ctx.params.question }
    end },
  },
  triggers = {
    trellis.trigger { name = "worse", on = "feedback",
      when = function(stats) return stats.feedback.window.count >= 2
                                    and stats.feedback.window.negative_rate > 0.5 end,
      run = "e2e-retrain", params = { model = "reranker" }, cooldown = 600 },
    trellis.trigger { name = "nightly", on = "schedule", cron = "0 3 * * *",
      run = "e2e-retrain@1" },
    trellis.trigger { name = "loops", on = "feedback",
      when = function(stats) while true do end end, run = "e2e-retrain" },
    trellis.trigger { name = "raises", on = "labels",
      when = function(stats) error("no luck with " .. stats.pipeline) end,
      run = "e2e-retrain" },
  },
}
