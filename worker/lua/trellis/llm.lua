-- trellis.llm - chat and embeddings for pipeline tasks (docs/llm.md).
--
-- The Lua half of the module; worker/lua_llm.c is the C half and passes its
-- functions as `...` (JSON, sha256, the providers file, API keys read from
-- the environment, Retry-After, jittered backoff, the response cache and
-- the task's usage list). They stay local to this chunk: pipeline code
-- never reaches them.
--
-- Every call goes through the same path: resolve the provider chain (the
-- provider asked for, then each fallback), and for each provider try the
-- request, retrying 429, 5xx, connection errors and malformed answers with
-- exponential backoff and jitter (or the server's Retry-After), never past
-- the call's deadline. Errors raised start with a stable code:
-- llm_rate_limited, llm_timeout, llm_bad_response, llm_bad_request,
-- http_error.

local C = ...
local http = require "trellis.http"
local trellis = require "trellis"

local M = {}

local DEFAULT_DEADLINE = 120  -- seconds for a whole call, retries included
local DEFAULT_RETRIES = 3     -- retries per provider after the first try
local DEFAULT_BACKOFF = 0.5   -- seconds before the first retry, doubled each time
local ANTHROPIC_VERSION = "2023-06-01"
local ANTHROPIC_MAX_TOKENS = 1024  -- Anthropic requires max_tokens

-- ======================================================================
-- Providers
-- ======================================================================

local providers = {}      -- name -> provider
local report_limits       -- defined with send
local embed_once          -- defined before M.embed
local default_name        -- the provider of calls that name none

local function strip_slash(url)
  return (url:gsub("/+$", ""))
end

local function add_provider(name, p)
  local prov = {
    name = name,
    kind = p.kind,
    base_url = p.base_url and strip_slash(p.base_url),
    api_key_env = p.api_key_env,
    prices = p.prices,
    models = {},          -- model name -> {prices}
    model_list = {},
    default_model = p.default_model,
    timeout = p.timeout,
    -- Budgets and quotas (docs/budgets.md).
    rpm = p.rpm, tpm = p.tpm, quota_key = p.quota_key or name,
    on_budget = p.on_budget, budget_fallback = p.budget_fallback,
    max_output_tokens = p.max_output_tokens,
  }
  if type(p.models) == "table" then
    if #p.models > 0 then
      for _, m in ipairs(p.models) do
        prov.models[m] = {}
        prov.model_list[#prov.model_list + 1] = m
      end
    else
      for m, def in pairs(p.models) do
        prov.models[m] = def
        prov.model_list[#prov.model_list + 1] = m
      end
      table.sort(prov.model_list)
    end
  end
  prov.default_model = prov.default_model or prov.model_list[1]
  providers[name] = prov
end

do
  local file = C.providers()
  if file then
    local names = {}
    for name, p in pairs(file) do
      add_provider(name, p)
      names[#names + 1] = name
      if p.default == true then default_name = name end
    end
    table.sort(names)
    default_name = default_name or names[1]
  else
    local env = C.env_config()
    if env then
      add_provider(env.provider, { kind = env.kind, base_url = env.base_url,
                                   api_key_env = "TRELLIS_LLM_API_KEY",
                                   default_model = env.model })
      providers[env.provider].key_optional = true
      default_name = env.provider
    end
  end
  if not providers.extractive then
    add_provider("extractive", { kind = "extractive" })
  end
  default_name = default_name or "extractive"
end

-- ======================================================================
-- Errors
-- ======================================================================

local function fail(code, fmt, ...)
  error(code .. ": " .. string.format(fmt, ...), 0)
end

-- A failed attempt: code and message, whether to retry, how long to wait.
local function attempt_error(code, retryable, msg, retry_after)
  return { code = code, retryable = retryable, msg = msg, retry_after = retry_after }
end

-- The code and retry policy of an HTTP answer that is not a success.
local function status_error(prov, res)
  local body = res.body or ""
  if #body > 300 then body = body:sub(1, 300) .. "..." end
  body = body:gsub("[%c]", " ")
  local after = res.headers and res.headers["retry-after"]
  local wait = after and C.retry_after(after) or nil
  local s = res.status
  local what = string.format("provider '%s' answered %d: %s", prov.name, s, body)
  if s == 429 then
    return attempt_error("llm_rate_limited", true, what, wait)
  elseif s >= 500 then
    return attempt_error("http_error", true, what, wait)
  elseif s == 408 then
    return attempt_error("llm_timeout", true, what, wait)
  end
  return attempt_error("llm_bad_request", false, what)
end

-- "1s", "6m0s", "20ms", "0.5" -> seconds; an RFC 3339 time (Anthropic's resets) too.
local function reset_seconds(v)
  if type(v) ~= "string" then return -1 end
  local n = tonumber(v)
  if n then return n end
  local total, any = 0, false
  for num, unit in v:gmatch("([%d%.]+)(%a+)") do
    local x = tonumber(num) or 0
    if unit == "ms" then total = total + x / 1000
    elseif unit == "s" then total = total + x
    elseif unit == "m" then total = total + x * 60
    elseif unit == "h" then total = total + x * 3600 end
    any = true
  end
  if any then return total end
  local wait = C.retry_after(v)  -- an HTTP date; RFC 3339 is not parsed: -1
  return wait or -1
end

-- The rate-limit headers of an answer, reported to the scheduler, which
-- shares the provider's quota across the workers (budget_client.c).
report_limits = function(prov, h)
  if type(h) ~= "table" then return end
  local rq = h["x-ratelimit-remaining-requests"] or h["anthropic-ratelimit-requests-remaining"]
  local rt = h["x-ratelimit-remaining-tokens"] or h["anthropic-ratelimit-tokens-remaining"]
  if not rq and not rt then return end
  C.budget_report(prov.quota_key, tonumber(rq) or -1, tonumber(rt) or -1,
                  reset_seconds(h["x-ratelimit-reset-requests"] or h["anthropic-ratelimit-requests-reset"]),
                  reset_seconds(h["x-ratelimit-reset-tokens"] or h["anthropic-ratelimit-tokens-reset"]))
end

-- Sends one request; returns the response or nil and an attempt error.
-- With sse, the answer is an event stream, and its tokens go to the run's
-- watchers as they arrive (llm_deltas: how to read them, by provider kind).
local function send(prov, url, headers, body, remaining, sse)
  local timeout = math.min(remaining, prov.timeout or remaining)
  local ok, res = pcall(http.request, {
    method = "POST", url = url, headers = headers, body = body, timeout = timeout, sse = sse,
    llm_deltas = sse and (prov.kind == "anthropic" and "anthropic" or "openai") or nil,
  })
  if not ok then
    local msg = tostring(res)
    if msg:find("^http_timeout") then
      -- A request given all the time left before the deadline ends the call;
      -- one cut shorter by the provider's own timeout may be retried.
      local final = timeout >= remaining
      local err = attempt_error("llm_timeout", not final, msg)
      err.final = final
      return nil, err
    end
    if msg:find("can only be called from a task", 1, true) then
      error(msg, 0)  -- called outside the task's coroutine: no retry can help
    end
    -- Connection refused or reset, DNS: worth another try.
    return nil, attempt_error("http_error", true, msg)
  end
  report_limits(prov, res.headers)
  if res.status < 200 or res.status >= 300 then
    return nil, status_error(prov, res)
  end
  return res
end

local function bad_response(prov, why)
  return attempt_error("llm_bad_response", true,
                       string.format("provider '%s' sent %s", prov.name, why))
end

-- ======================================================================
-- Requests per kind
-- ======================================================================

local function api_headers(prov)
  local h = { ["content-type"] = "application/json", accept = "application/json" }
  local key = prov.api_key_env and C.api_key(prov.api_key_env)
  if prov.api_key_env and not key and not prov.key_optional then
    fail("llm_bad_request", "provider '%s' needs its API key in the environment variable %s",
         prov.name, prov.api_key_env)
  end
  if prov.kind == "anthropic" then
    h["anthropic-version"] = ANTHROPIC_VERSION
    if key then h["x-api-key"] = key end
  elseif key then
    h.authorization = "Bearer " .. key
  end
  return h
end

local function estimate_tokens(s)
  return math.ceil(#s / 4)
end

local function text_of(content)
  if type(content) == "string" then return content end
  if type(content) ~= "table" then return "" end
  local parts = {}
  for _, part in ipairs(content) do
    if type(part) == "table" and type(part.text) == "string" then parts[#parts + 1] = part.text end
  end
  return table.concat(parts, "\n")
end

local function openai_chat(prov, call, model, remaining)
  local body = {
    model = model, messages = call.messages, max_tokens = call.max_tokens,
    temperature = call.temperature, response_format = call.response_format,
  }
  if call.stream then
    body.stream = true
    body.stream_options = { include_usage = true }
  end
  local res, err = send(prov, prov.base_url .. "/chat/completions", api_headers(prov),
                        C.json_encode(body), remaining, call.stream)
  if not res then return nil, err end
  local text, usage, finish = nil, nil, nil
  if call.stream then
    local parts, done = {}, false
    for _, ev in ipairs(res.events or {}) do
      if ev.data == "[DONE]" then
        done = true
        break
      end
      local chunk = C.json_decode(ev.data)
      if type(chunk) ~= "table" then return nil, bad_response(prov, "a malformed stream event") end
      if chunk.error then
        return nil, bad_response(prov, "an error in the stream: " .. tostring(
                                   type(chunk.error) == "table" and chunk.error.message or chunk.error))
      end
      local choice = type(chunk.choices) == "table" and chunk.choices[1]
      local delta = type(choice) == "table" and choice.delta
      if type(delta) == "table" and type(delta.content) == "string" then
        parts[#parts + 1] = delta.content
      end
      if type(choice) == "table" and type(choice.finish_reason) == "string" then
        finish = choice.finish_reason
      end
      if type(chunk.usage) == "table" then usage = chunk.usage end
    end
    if not done then
      return nil, bad_response(prov, "a stream that ended before [DONE]")
    end
    text = table.concat(parts)
  else
    local obj, why = C.json_decode(res.body)
    if type(obj) ~= "table" then return nil, bad_response(prov, "malformed JSON: " .. (why or "")) end
    local choice = type(obj.choices) == "table" and obj.choices[1]
    local msg = type(choice) == "table" and choice.message
    if type(msg) ~= "table" then return nil, bad_response(prov, "an answer without choices") end
    text = text_of(msg.content)
    finish = type(choice.finish_reason) == "string" and choice.finish_reason or nil
    usage = obj.usage
    model = type(obj.model) == "string" and obj.model or model
  end
  usage = type(usage) == "table" and usage or {}
  return {
    text = text, model = model, finish_reason = finish,
    usage = { prompt_tokens = math.tointeger(usage.prompt_tokens),
              completion_tokens = math.tointeger(usage.completion_tokens) },
  }
end

local function anthropic_chat(prov, call, model, remaining)
  local system, messages = {}, {}
  for _, m in ipairs(call.messages) do
    if m.role == "system" then
      system[#system + 1] = text_of(m.content)
    else
      messages[#messages + 1] = { role = m.role, content = m.content }
    end
  end
  local body = {
    model = model, messages = messages, max_tokens = call.max_tokens or ANTHROPIC_MAX_TOKENS,
    temperature = call.temperature, stream = call.stream or nil,
    system = #system > 0 and table.concat(system, "\n\n") or nil,
  }
  local base = prov.base_url
  local url = base:find("/v1$") and base .. "/messages" or base .. "/v1/messages"
  local res, err = send(prov, url, api_headers(prov), C.json_encode(body), remaining, call.stream)
  if not res then return nil, err end
  local text, pt, ct, finish
  if call.stream then
    local parts, done = {}, false
    for _, ev in ipairs(res.events or {}) do
      local data = C.json_decode(ev.data)
      if type(data) ~= "table" then return nil, bad_response(prov, "a malformed stream event") end
      local kind = data.type or ev.event
      if kind == "message_start" and type(data.message) == "table" then
        local u = data.message.usage
        if type(u) == "table" then pt = u.input_tokens end
      elseif kind == "content_block_delta" and type(data.delta) == "table" then
        if type(data.delta.text) == "string" then parts[#parts + 1] = data.delta.text end
      elseif kind == "message_delta" and type(data.usage) == "table" then
        ct = data.usage.output_tokens
        if type(data.delta) == "table" then finish = data.delta.stop_reason end
      elseif kind == "message_stop" then
        done = true
        break
      elseif kind == "error" then
        local e = type(data.error) == "table" and data.error or {}
        if e.type == "overloaded_error" or e.type == "rate_limit_error" then
          return nil, attempt_error(e.type == "rate_limit_error" and "llm_rate_limited"
                                    or "http_error", true,
                                    string.format("provider '%s' stream error: %s", prov.name,
                                                  tostring(e.message)))
        end
        return nil, bad_response(prov, "an error in the stream: " .. tostring(e.message))
      end
    end
    if not done then
      return nil, bad_response(prov, "a stream that ended before message_stop")
    end
    text = table.concat(parts)
  else
    local obj, why = C.json_decode(res.body)
    if type(obj) ~= "table" then return nil, bad_response(prov, "malformed JSON: " .. (why or "")) end
    if type(obj.content) ~= "table" then return nil, bad_response(prov, "an answer without content") end
    text = text_of(obj.content)
    local u = type(obj.usage) == "table" and obj.usage or {}
    pt, ct = u.input_tokens, u.output_tokens
    finish = obj.stop_reason
    model = type(obj.model) == "string" and obj.model or model
  end
  return { text = text, model = model,
           finish_reason = type(finish) == "string" and finish or nil,
           usage = { prompt_tokens = math.tointeger(pt), completion_tokens = math.tointeger(ct) } }
end

-- ======================================================================
-- The extractive provider: answers from the call's context, no model
-- ======================================================================

local STOP = {}
for w in ([[a an and are as at be by for from has have how in is it its of on or that the
  this to was were what when where which who why will with do does did not no can you your
  i we they he she them their our me my]]):gmatch("%a+") do STOP[w] = true end

local function terms(s)
  local out = {}
  for w in s:lower():gmatch("[%w_]+") do
    if #w > 1 and not STOP[w] then out[#out + 1] = w end
  end
  return out
end

local function last_user_text(messages)
  for i = #messages, 1, -1 do
    local m = messages[i]
    if type(m) == "table" and m.role == "user" then return text_of(m.content) end
  end
  return ""
end

-- The prose of a Markdown passage as paragraphs: wrapped lines joined, a
-- list item or a heading its own paragraph, fenced and indented code and
-- table rows left out (they are examples, not answers).
local function prose_paragraphs(text)
  local out, para, fence = {}, {}, false
  local function flush()
    if #para > 0 then out[#out + 1] = table.concat(para, " ") end
    para = {}
  end
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    if line:match("^%s*```") or line:match("^%s*~~~") then
      fence = not fence
      flush()
    elseif fence or line:match("^%s*|") or line:match("^\t") or
           (line:match("^    ") and #para == 0) then
      flush()
    elseif not line:find("%S") then
      flush()
    elseif line:match("^%s*[-*+]%s") or line:match("^%s*%d+[.)]%s") or line:match("^%s*#") or
           line:match("^%s*>") then
      flush()
      para[1] = line
    else
      para[#para + 1] = line
    end
  end
  flush()
  return out
end

-- Markdown marks taken off a sentence: list markers, headings, quotes,
-- emphasis, code spans and links keep their words only.
local function plain(s)
  s = s:gsub("^%s*[-*+]%s+", ""):gsub("^%s*%d+[.)]%s+", ""):gsub("^%s*#+%s*", "")
  s = s:gsub("^%s*>%s*", "")
  s = s:gsub("%*%*(.-)%*%*", "%1"):gsub("__(.-)__", "%1"):gsub("`([^`]*)`", "%1")
  s = s:gsub("%[([^%]]+)%]%([^%)]*%)", "%1")
  return (s:gsub("%s+", " "):match("^%s*(.-)%s*$"))
end

-- The sentences of a paragraph: one ends at . ! or ? followed by a space and
-- a capital, a digit or a mark that opens one; so file names (rag.md),
-- versions (5.4) and code (a.b) do not end sentences. A passage is a chunk
-- of a document and may start or end mid-sentence: such a piece (starting in
-- lower case where the passage starts, or with no final stop) is kept with
-- "…" where it was cut and marked cut, so it ranks below a whole sentence of
-- the same score. Pieces of fewer than four words are left out.
local function whole_sentences(para, first_of_passage, out)
  local start, i = 1, 1
  local parts = {}
  while true do
    local a, b = para:find("[%.!?][\"')%]*]*%s+", i)
    if not a then break end
    if para:sub(b + 1, b + 1):match("[%u%d`\"'(%[*]") then
      parts[#parts + 1] = para:sub(start, b)
      start = b + 1
    end
    i = b + 1
  end
  parts[#parts + 1] = para:sub(start)
  for j, raw in ipairs(parts) do
    local s = plain(raw)
    local _, words = s:gsub("%S+", "")
    if words >= 4 then
      local cut = false
      if j == 1 and first_of_passage and raw:match("^%s*%l") then
        s, cut = "…" .. s, true
      end
      if not s:match("[%.!?:;][\"')%]]*$") then
        s, cut = s .. "…", true
      end
      out[#out + 1] = { text = s, cut = cut }
    end
  end
end

local function extractive_chat(call)
  local question = last_user_text(call.messages)
  local q = {}
  for _, t in ipairs(terms(question)) do q[t] = true end
  local sentences, df = {}, {}
  for i, passage in ipairs(call.context or {}) do
    local text = type(passage) == "table" and passage.text or passage
    local source = type(passage) == "table" and passage.source or nil
    if type(text) == "string" then
      local found = {}
      for j, para in ipairs(prose_paragraphs(text)) do whole_sentences(para, j == 1, found) end
      for _, f in ipairs(found) do
        local seen = {}
        for _, t in ipairs(terms(f.text)) do
          if not seen[t] then
            seen[t] = true
            df[t] = (df[t] or 0) + 1
          end
        end
        sentences[#sentences + 1] = { text = f.text, source = source or ("context " .. i),
                                      terms = seen, n = #sentences + 1, cut = f.cut }
      end
    end
  end
  local total = #sentences
  for _, s in ipairs(sentences) do
    local score, len = 0, 0
    for t in pairs(s.terms) do
      len = len + 1
      if q[t] then score = score + math.log(1 + total / df[t]) end
    end
    s.score = score / (1 + math.log(1 + len)) * (s.cut and 0.8 or 1)
  end
  table.sort(sentences, function(a, b)
    if a.score ~= b.score then return a.score > b.score end
    return a.n < b.n
  end)
  local k = math.tointeger(call.top_k) or 3
  local picked, lines = {}, {}
  for i = 1, math.min(k, total) do
    if sentences[i].score <= 0 then break end
    local s = sentences[i]
    picked[#picked + 1] = { text = s.text, source = s.source, score = s.score }
    lines[#lines + 1] = string.format("- %s [%s]", s.text, s.source)
  end
  local text
  if #picked == 0 then
    text = "extractive answer (no language model configured): no passage of the context " ..
           "matches the question"
  else
    text = "extractive answer (no language model configured):\n" .. table.concat(lines, "\n")
  end
  local prompt_words = #terms(question)
  for _, s in ipairs(sentences) do
    for _ in pairs(s.terms) do prompt_words = prompt_words + 1 end
  end
  return { text = text, model = "extractive", sources = picked,
           usage = { prompt_tokens = prompt_words, completion_tokens = #terms(text) } }
end

-- ======================================================================
-- Retries, fallbacks, cache, accounting
-- ======================================================================

local function price_of(prov, model)
  local def = prov.models[model]
  local p = (type(def) == "table" and def.prices) or prov.prices
  if type(p) ~= "table" then return 0, 0 end
  return tonumber(p.input) or 0, tonumber(p.output) or 0
end

-- The chain of {provider, model} a call tries: its own, then its fallbacks.
local function resolve(spec, call)
  local name = spec.provider
  local model = spec.model
  if not name and model then
    for pname, p in pairs(providers) do
      if p.models[model] then name = pname break end
    end
  end
  name = name or default_name
  local prov = providers[name]
  if not prov then
    fail("llm_bad_request", "unknown provider '%s' (configured: %s)", tostring(name),
         (function()
           local n = {}
           for k in pairs(providers) do n[#n + 1] = k end
           table.sort(n)
           return table.concat(n, ", ")
         end)())
  end
  model = model or prov.default_model
  if prov.kind ~= "extractive" and not model then
    fail("llm_bad_request", "no model for provider '%s': pass model = ... or set its "
         .. "default_model", prov.name)
  end
  return { prov = prov, model = model or "extractive" }
end

local function chain_of(call)
  local chain = { resolve(call, call) }
  local fb = call.fallback
  if type(fb) == "string" or (type(fb) == "table" and (fb.provider or fb.model)) then fb = { fb } end
  for _, f in ipairs(fb or {}) do
    if type(f) == "string" then f = { provider = f } end
    chain[#chain + 1] = resolve(f, call)
  end
  return chain
end

local function check_messages(call)
  if type(call) ~= "table" then fail("llm_bad_request", "llm.chat expects a table") end
  if type(call.messages) ~= "table" or #call.messages == 0 then
    fail("llm_bad_request", "llm.chat needs messages = { {role = ..., content = ...}, ... }")
  end
  for i, m in ipairs(call.messages) do
    if type(m) ~= "table" or type(m.role) ~= "string" or m.content == nil then
      fail("llm_bad_request", "message %d needs a role and a content", i)
    end
  end
end

-- ======================================================================
-- Budgets: reserve the worst case before a request leaves, settle after
-- ======================================================================

local DEFAULT_MAX_OUTPUT = 4096  -- the worst case of a call that names no max_tokens

-- Prompt tokens, over-estimated (a token is rarely under 3 bytes), so that
-- the real usage stays under the reservation.
local function prompt_worst(texts)
  local n = 0
  for _, s in ipairs(texts) do n = n + math.ceil(#s / 3) + 8 end
  return n
end

-- Reserves tokens (prompt_tokens + max_out) of target; returns the
-- reservation id (0 outside a task), or nil and an attempt error. Waits for
-- the provider's quota while the deadline allows.
local function reserve(target, call, prompt_tokens, max_out, stop_at)
  local prov = target.prov
  if prov.kind == "extractive" then return 0 end
  local pin, pout = price_of(prov, target.model)
  local tokens = prompt_tokens + max_out
  local cost = (prompt_tokens * pin + max_out * pout) / 1e6
  while true do
    local code, id, wait, policy, msg = C.budget_reserve(prov.quota_key, prov.rpm, prov.tpm,
                                                         tokens, cost, call.on_budget or "",
                                                         prov.on_budget or "")
    if code == nil or code == "ok" then return id or 0 end
    if code == "rate_limited" then
      if C.mono_ms() + wait * 1000 >= stop_at then
        return nil, attempt_error("llm_rate_limited", false, string.format(
          "provider '%s': the shared quota is used up and waiting %.3g s would pass the "
          .. "deadline (%s)", prov.name, wait, msg))
      end
      trellis.sleep(wait)
    elseif code == "budget_exceeded" then
      local err = attempt_error("budget_exceeded", false, msg)
      err.budget = true
      err.policy = call.on_budget or (policy ~= "fail" and policy) or prov.on_budget or "fail"
      return nil, err
    else
      return nil, attempt_error("budget_unavailable", false, msg)
    end
  end
end

-- The cheaper target a budget_exceeded falls back to (the providers file's
-- budget_fallback of the model, or of the provider), or nil.
local function budget_fallback(target)
  local def = target.prov.models[target.model]
  local fb = (type(def) == "table" and def.budget_fallback) or target.prov.budget_fallback
  if type(fb) ~= "table" then return nil end
  local ok, t = pcall(resolve, { provider = fb.provider or target.prov.name, model = fb.model })
  return ok and t or nil
end

-- Runs try(target, remaining) over the chain with retries; returns result, target.
local function with_retries(call, chain, try)
  local deadline = tonumber(call.deadline) or DEFAULT_DEADLINE
  local retries = math.tointeger(call.retries) or DEFAULT_RETRIES
  local backoff = tonumber(call.backoff) or DEFAULT_BACKOFF
  local t0 = C.mono_ms()
  local stop_at = t0 + deadline * 1000
  local last
  local i = 0
  while i < #chain do
    i = i + 1
    local target = chain[i]
    local failures = 0
    while true do
      local remaining = (stop_at - C.mono_ms()) / 1000
      if remaining <= 0 then
        fail("llm_timeout", "deadline of %g s passed%s", deadline,
             last and (" (last error: " .. last.code .. ": " .. last.msg .. ")") or "")
      end
      local res, err = try(target, remaining, stop_at)
      if res then return res, target, t0 end
      last = err
      if err.budget then
        local fb = err.policy == "fallback" and not target.budget_fb and budget_fallback(target)
        if not fb then
          fail("budget_exceeded", "%s", err.msg)
        end
        fb.budget_fb = true  -- one step down, not a loop
        table.insert(chain, i + 1, fb)
        break
      end
      if err.final then
        fail(err.code, "%s (deadline %g s)", err.msg, deadline)
      end
      if not err.retryable or failures >= retries then break end
      failures = failures + 1
      local wait = err.retry_after or C.backoff(backoff, failures)
      if C.mono_ms() + wait * 1000 >= stop_at then
        fail(err.code, "%s (no retry: waiting %g s would pass the deadline)", err.msg, wait)
      end
      trellis.sleep(wait)
    end
  end
  fail(last.code, "%s", last.msg)
end

-- request_model and operation name the call's span (docs/observability.md).
local function account(r, prompt_digest, cached, request_model, operation)
  C.usage_add { provider = r.provider, model = r.model, prompt_digest = prompt_digest,
                prompt_tokens = r.usage.prompt_tokens, completion_tokens = r.usage.completion_tokens,
                cost = cached and 0 or r.cost, latency_ms = r.latency_ms, cached = cached,
                request_model = request_model, operation = operation,
                finish_reason = r.finish_reason }
end

local function copy(v)
  if type(v) ~= "table" then return v end
  local out = {}
  for k, x in pairs(v) do out[k] = copy(x) end
  return out
end

-- ======================================================================
-- The API
-- ======================================================================

function M.chat(call)
  check_messages(call)
  local chain = chain_of(call)
  -- A template's digest (trellis.prompt's p.digest) names the prompt across
  -- runs whose variables differ; without one, the rendered messages do.
  local prompt_digest = call.prompt_digest
  if prompt_digest ~= nil and (type(prompt_digest) ~= "string" or #prompt_digest == 0
      or #prompt_digest > 128) then
    error("bad argument to 'chat' (prompt_digest must be a string of 1 to 128 bytes)", 2)
  end
  prompt_digest = prompt_digest or C.sha256(C.json_encode(call.messages))
  local key
  if call.cache then
    key = C.sha256(C.json_encode {
      kind = "chat", provider = chain[1].prov.name, model = chain[1].model,
      messages = call.messages, max_tokens = call.max_tokens, temperature = call.temperature,
      response_format = call.response_format, context = call.context, top_k = call.top_k,
    })
    local t0 = C.mono_ms()
    local hit = C.cache_get(key)
    if hit then
      hit.cached = true
      hit.latency_ms = C.mono_ms() - t0
      account(hit, prompt_digest, true, chain[1].model, "chat")
      return hit
    end
  end
  local texts = {}
  for i, m in ipairs(call.messages) do texts[i] = text_of(m.content) end
  local worst_prompt = prompt_worst(texts)
  local function try(target, remaining, stop_at)
    local prov = target.prov
    if prov.kind == "extractive" then return extractive_chat(call) end
    local max_out = math.tointeger(call.max_tokens) or prov.max_output_tokens
                    or (prov.kind == "anthropic" and ANTHROPIC_MAX_TOKENS) or DEFAULT_MAX_OUTPUT
    local t_res = C.mono_ms()
    local rid, rerr = reserve(target, call, worst_prompt, max_out, stop_at)
    if not rid then return nil, rerr end
    local budget_ms = C.mono_ms() - t_res
    local f = prov.kind == "anthropic" and anthropic_chat or openai_chat
    local ok, r, err = pcall(f, prov, call, target.model, remaining)
    if not ok or not r then
      -- A request that may have been served counts at its worst case;
      -- one the provider refused with a status costs nothing.
      local served = not ok or err.code == "llm_timeout" or err.code == "http_error"
      local pin, pout = price_of(prov, target.model)
      C.budget_settle(rid, served and worst_prompt + max_out or 0,
                      served and (worst_prompt * pin + max_out * pout) / 1e6 or 0)
      if not ok then error(r, 0) end
      return nil, err
    end
    local pt = r.usage.prompt_tokens or worst_prompt
    local ct = r.usage.completion_tokens or estimate_tokens(r.text)
    local pin, pout = price_of(prov, target.model)
    C.budget_settle(rid, pt + ct, (pt * pin + ct * pout) / 1e6)
    r.budget_ms = budget_ms  -- the reservation's round trip (and quota waits)
    return r
  end
  C.span_begin() -- the span of this call: its requests carry it in traceparent
  local r, target, t0 = with_retries(call, chain, try)
  local prov = target.prov
  local estimated = false
  if not r.usage.prompt_tokens then
    local n = 0
    for _, m in ipairs(call.messages) do n = n + estimate_tokens(text_of(m.content)) end
    r.usage.prompt_tokens, estimated = n, true
  end
  if not r.usage.completion_tokens then
    r.usage.completion_tokens, estimated = estimate_tokens(r.text), true
  end
  r.usage.estimated = estimated or nil
  local pin, pout = price_of(prov, target.model)
  r.provider = prov.name
  r.cost = (r.usage.prompt_tokens * pin + r.usage.completion_tokens * pout) / 1e6
  r.latency_ms = C.mono_ms() - t0
  r.cached = false
  if key then C.cache_put(key, r) end
  account(r, prompt_digest, false, target.model, "chat")
  return r
end

-- Guardrails (docs/guardrails.md): when the pipeline, the task or the call
-- declares guards, the call runs between trellis.guard's input and output
-- checks; the unguarded path costs one C call.
local chat_unguarded = M.chat
function M.chat(call)
  local pg, tg = C.guards()
  local cg = type(call) == "table" and call.guards or nil
  if pg == nil and tg == nil and cg == nil then return chat_unguarded(call) end
  check_messages(call)
  if cg ~= nil and type(cg) ~= "table" then
    fail("llm_bad_request", "guards must be a table { input = {...}, output = {...} }")
  end
  local guard = require "trellis.guard"
  local g = guard.effective(pg, tg, cg)
  if g == nil then return chat_unguarded(call) end
  return guard.around(g, call, chat_unguarded)
end

-- Hashed bag of words: the extractive provider's embeddings (no model).
local EXTRACTIVE_DIM = 256
local function hash_embed(text)
  local v = {}
  for i = 1, EXTRACTIVE_DIM do v[i] = 0.0 end
  for _, w in ipairs(terms(text)) do
    local h = 2166136261
    for i = 1, #w do h = ((h ~ w:byte(i)) * 16777619) & 0xffffffff end
    local sign = (h >> 31) == 1 and -1.0 or 1.0
    local idx = h % EXTRACTIVE_DIM + 1
    v[idx] = v[idx] + sign
  end
  local norm = 0
  for i = 1, EXTRACTIVE_DIM do norm = norm + v[i] * v[i] end
  norm = math.sqrt(norm)
  if norm > 0 then
    for i = 1, EXTRACTIVE_DIM do v[i] = v[i] / norm end
  end
  return v
end

-- One embeddings request to an OpenAI-compatible provider.
embed_once = function(prov, target, input, remaining)
  local res, err = send(prov, prov.base_url .. "/embeddings", api_headers(prov),
                        C.json_encode { model = target.model, input = input }, remaining)
  if not res then return nil, err end
  local obj, why = C.json_decode(res.body)
  if type(obj) ~= "table" or type(obj.data) ~= "table" then
    return nil, bad_response(prov, "malformed embeddings: " .. (why or "no data"))
  end
  local vectors = {}
  for i, d in ipairs(obj.data) do
    if type(d) ~= "table" or type(d.embedding) ~= "table" then
      return nil, bad_response(prov, "an embedding that is not an array")
    end
    vectors[(math.tointeger(d.index) or (i - 1)) + 1] = d.embedding
  end
  if #vectors ~= #input then
    return nil, bad_response(prov, string.format("%d embeddings for %d inputs", #vectors, #input))
  end
  local u = type(obj.usage) == "table" and obj.usage or {}
  return { vectors = vectors, model = type(obj.model) == "string" and obj.model or target.model,
           usage = { prompt_tokens = math.tointeger(u.prompt_tokens) } }
end

function M.embed(call)
  if type(call) ~= "table" then fail("llm_bad_request", "llm.embed expects a table") end
  local input = call.input
  if type(input) == "string" then input = { input } end
  if type(input) ~= "table" or #input == 0 then
    fail("llm_bad_request", "llm.embed needs input = a string or an array of strings")
  end
  for i, s in ipairs(input) do
    if type(s) ~= "string" then fail("llm_bad_request", "input %d is not a string", i) end
  end
  local chain = chain_of(call)
  local worst_prompt = prompt_worst(input)
  local function try(target, remaining, stop_at)
    local prov = target.prov
    if prov.kind ~= "extractive" and prov.kind == "openai" then
      local rid, rerr = reserve(target, call, worst_prompt, 0, stop_at)
      if not rid then return nil, rerr end
      local ok, r, err = pcall(embed_once, prov, target, input, remaining)
      local pin = price_of(prov, target.model)
      local used = ok and r and (r.usage.prompt_tokens or worst_prompt) or
                   ((not ok or err.code == "llm_timeout") and worst_prompt or 0)
      C.budget_settle(rid, used, used * pin / 1e6)
      if not ok then error(r, 0) end
      return r, err
    end
    if prov.kind == "extractive" then
      local vectors, n = {}, 0
      for i, s in ipairs(input) do
        vectors[i] = hash_embed(s)
        n = n + #terms(s)
      end
      return { vectors = vectors, model = "extractive-hash-" .. EXTRACTIVE_DIM,
               usage = { prompt_tokens = n } }
    end
    if prov.kind ~= "openai" then
      return nil, attempt_error("llm_bad_request", false,
                                string.format("provider '%s' (%s) has no embeddings", prov.name,
                                              prov.kind))
    end
    return nil, attempt_error("llm_bad_request", false, "unreachable")
  end
  C.span_begin()
  local r, target, t0 = with_retries(call, chain, try)
  local prov = target.prov
  if not r.usage.prompt_tokens then
    local n = 0
    for _, s in ipairs(input) do n = n + estimate_tokens(s) end
    r.usage.prompt_tokens = n
  end
  r.usage.completion_tokens = 0
  local pin = price_of(prov, target.model)
  r.provider = prov.name
  r.cost = r.usage.prompt_tokens * pin / 1e6
  r.latency_ms = C.mono_ms() - t0
  account(r, C.sha256(C.json_encode(input)), false, target.model, "embeddings")
  return r
end

-- The configured providers, for pipelines that want to choose: name -> {kind, models}.
function M.providers()
  local out = {}
  for name, p in pairs(providers) do
    out[name] = { kind = p.kind, models = copy(p.model_list), default_model = p.default_model,
                  default = name == default_name }
  end
  return out
end

return M
