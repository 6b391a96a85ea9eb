-- What the triggers of trg_watched.lua start: echoes the trigger it came from.
local trellis = require "trellis"
return trellis.pipeline {
  name = "e2e-retrain", version = "1",
  extra_params = true, -- optional params (nil unless a run gives them)
  params = { model = "none" },
  tasks = {
    trellis.task { name = "train", run = function(ctx)
      local t = ctx.params.trigger or {}
      return { model = ctx.params.model, by = t.name,
               count = t.stats and t.stats.feedback and t.stats.feedback.count }
    end },
  },
}
