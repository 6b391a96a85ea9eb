-- Two tasks, three llm.chat calls (tests/e2e/test_usage.sh): `first` makes
-- one call per attempt and fails its first attempt after the call, so its
-- usage spans two attempts; `second` makes one call on another model and
-- names no template, after sleeping `nap` seconds (so that a test can kill
-- the scheduler while it runs). With `linger`, the first task's second
-- attempt sleeps that long after its call (so that a test can cancel the run
-- once the call was made). Worker modules are required inside run: the
-- scheduler reads the graph without them.
local trellis = require "trellis"
return trellis.pipeline {
  name = "e2e-llm-usage", version = "1",
  params = { nap = 0, linger = 0, model = "ok-a" },
  tasks = {
    trellis.task { name = "first", retries = 1, backoff = 0.01, run = function(ctx)
      local llm = require "trellis.llm"
      local prompt = require "trellis.prompt"
      local ask = prompt.template { name = "ask", text = "question: {{q}}" }
      local r = llm.chat { messages = { { role = "user", content = ask:render { q = "one two" } } },
                           model = ctx.params.model, prompt_digest = ask.digest }
      if ctx.attempt == 1 then error("the first attempt fails after its call") end
      if ctx.params.linger > 0 then trellis.sleep(ctx.params.linger) end
      return { text = r.text, digest = ask.digest }
    end },
    trellis.task { name = "second", after = { "first" }, run = function(ctx, first)
      if ctx.params.nap > 0 then trellis.sleep(ctx.params.nap) end
      local llm = require "trellis.llm"
      local r = llm.chat { messages = { { role = "user", content = "three four five" } },
                           model = "ok-b" }
      return r.text
    end },
  },
}
