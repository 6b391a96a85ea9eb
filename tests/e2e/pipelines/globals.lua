-- Globals assigned by a run are the run's own: the next run of the same
-- version on the same worker starts without them, and the file's top-level
-- globals read the same in every run.
local trellis = require "trellis"
shared_top = "top"
return trellis.pipeline {
  name = "e2e-globals", version = "1",
  params = { secret = "none" },
  tasks = {
    trellis.task { name = "set", run = function(ctx)
      local seen = {
        plain = tostring(secret), via_g = tostring(_G.secret2),
        via_load = tostring(load("return secret3")()), top = shared_top,
      }
      secret = ctx.params.secret
      _G.secret2 = ctx.params.secret
      load("secret3 = ...")(ctx.params.secret)
      shared_top = "changed by " .. ctx.params.secret
      seen.after = table.concat({ secret, secret2, secret3, shared_top }, "/")
      return seen
    end },
  },
}
