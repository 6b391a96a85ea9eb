-- trellis.http against the fake server's plain endpoints; params.mode picks
-- the case, params.base is the server's URL.
-- Worker modules are required inside run: the scheduler reads the graph
-- without them.
local trellis = require "trellis"
return trellis.pipeline {
  name = "e2e-llm-http", version = "1",
  extra_params = true, -- optional params (nil unless a run gives them)
  params = { mode = "get" },
  tasks = {
    trellis.task { name = "http", run = function(ctx)
      local http = require "trellis.http"
      local base, mode = ctx.params.base, ctx.params.mode
      if mode == "get" then
        local r = http.request { url = base .. "/echo?q=1", headers = { ["X-Test"] = "t1" } }
        local j = r.body
        return { status = r.status, echo = r.headers["x-echo"], has_header = j:find('"x%-test": "t1"') ~= nil,
                 method = j:match('"method": "(%u+)"') }
      elseif mode == "post" then
        local r = http.request { method = "POST", url = base .. "/echo", body = "payload-123",
                                 headers = { ["Content-Type"] = "text/plain", ["X-N"] = 7 } }
        return { status = r.status, has_body = r.body:find("payload%-123") ~= nil,
                 has_n = r.body:find('"x%-n": "7"') ~= nil, method = r.body:match('"method": "(%u+)"') }
      elseif mode == "big" then
        return http.request { url = base .. "/big?n=5000", max_response_bytes = 1000 }.status
      elseif mode == "timeout" then
        return http.request { url = base .. "/slow?ms=3000", timeout = 0.3 }.status
      elseif mode == "status" then
        local r = http.request { url = base .. "/status?code=503" }
        return r.status
      elseif mode == "redirect" then
        local a = http.request { url = base .. "/redirect?to=/echo" }
        local b = http.request { url = base .. "/redirect?to=/echo", follow_redirects = true }
        return { a.status, b.status }
      elseif mode == "refused" then
        return http.request { url = ctx.params.dead, timeout = 5 }.status
      elseif mode == "hang" then
        return http.request { url = base .. "/slow?ms=20000", timeout = 60 }.status
      elseif mode == "nested" then
        -- Inside a coroutine the task made, a wait cannot reach the loop.
        local llm = require "trellis.llm"
        local co = coroutine.wrap(function()
          return llm.chat { messages = { { role = "user", content = "x" } }, model = "ok" }
        end)
        return co()
      elseif mode == "many" then
        -- 50 tasks' worth of requests from coroutines would not yield to the
        -- loop; one task issues them in sequence over reused connections.
        local n = 0
        for _ = 1, 20 do
          if http.request { url = base .. "/echo" }.status == 200 then n = n + 1 end
        end
        return n
      end
      error("unknown mode " .. tostring(mode))
    end },
  },
}
