-- trellis.secret (test_secrets.sh): independent tasks that return, log and
-- raise with a secret's value; the worker must redact all of it.
local trellis = require "trellis"
return trellis.pipeline {
  name = "e2e-secrets", version = "1",
  tasks = {
    trellis.task { name = "out", run = function(ctx)
      local s = trellis.secret("API_TOKEN")
      return { token = s, note = "Bearer " .. s .. "!", [s] = "as a key", len = #s,
               list = { s, "plain" } }
    end },
    trellis.task { name = "log", run = function(ctx)
      local s = trellis.secret("API_TOKEN")
      ctx.log("calling with", s, "now")
      return "logged"
    end },
    trellis.task { name = "env", run = function(ctx)
      local s = trellis.secret("FROM_ENV")
      ctx.log("env secret", s)
      return { len = #s, value = s }
    end },
    trellis.task { name = "checks", run = function(ctx)
      local ok1, e1 = pcall(trellis.secret, "NOPE")
      local ok2, e2 = pcall(trellis.secret, "../etc/passwd")
      local ok3, e3 = pcall(trellis.secret, ".hidden")
      return { missing = tostring(e1), traversal = tostring(e2), dot = tostring(e3),
               any_ok = ok1 or ok2 or ok3 }
    end },
    trellis.task { name = "fail", run = function(ctx)
      error("login refused for token " .. trellis.secret("API_TOKEN"))
    end },
  },
}
