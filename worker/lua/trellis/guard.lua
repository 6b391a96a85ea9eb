-- trellis.guard - guardrails for model calls (docs/guardrails.md).
--
-- Usable alone (guard.pii, guard.redact, guard.injection, guard.validate,
-- guard.blocked, guard.max_length) and as the hooks trellis.llm runs around
-- each chat call when the pipeline (or the task, or the call) declares
-- `guards = { input = {...}, output = {...}, fallback = "..." }`.
--
-- The C half (worker/lua_guard.c) passes the PII scan and redaction as `...`
-- (a single pass in C: worker/guard_pii.c), the Luhn and mod-97 checks, and
-- blocked_record, which puts a blocked call in the task's usage list for the
-- scheduler to count (trellis_guard_blocked_total) and audit.
--
-- A blocked call fails closed: the error starts with "guard_blocked: <check>"
-- (pii, injection, max_length, blocked, schema), or, with a fallback, the call
-- returns the fallback as its text with guarded = true.

local C = ...
local json = require "trellis.json"

local M = {}

M.KNOWN_INPUT = { pii = true, injection = true, max_length = true, blocked = true }
M.KNOWN_OUTPUT = { pii = true, injection = true, max_length = true, blocked = true,
                   schema = true }
M.DEFAULT_THRESHOLD = 0.7

-- ======================================================================
-- PII
-- ======================================================================

local function kinds_of(opts)
  if type(opts) == "table" then return opts.kinds end
  return nil
end

-- Findings: { {kind = "email"|"phone"|"card"|"iban", value, start, stop}, ... }
function M.pii(text, opts)
  if type(text) ~= "string" then error("bad argument to 'pii' (string expected)", 2) end
  return C.pii_scan(text, kinds_of(opts))
end

-- The text with each finding replaced by [EMAIL], [PHONE], [CARD] or [IBAN],
-- and the number of replacements.
function M.redact(text, opts)
  if type(text) ~= "string" then error("bad argument to 'redact' (string expected)", 2) end
  return C.redact(text, kinds_of(opts))
end

M.luhn = C.luhn
M.iban_ok = C.iban_ok

-- ======================================================================
-- Prompt injection
-- ======================================================================

-- Invisible characters used to split trigger words (zero-width space,
-- joiners, word joiner, soft hyphen, BOM).
local INVISIBLE = { "\226\128\139", "\226\128\140", "\226\128\141", "\226\129\160",
                    "\194\173", "\239\187\191" }

local function normalize(text)
  local invisible = 0
  for _, z in ipairs(INVISIBLE) do
    if text:find(z, 1, true) then
      local n
      text, n = text:gsub(z, "")
      invisible = invisible + n
    end
  end
  local t = text:lower():gsub("%s+", " ")
  -- A squashed form (letters only, leetspeak undone) catches "i g n o r e",
  -- "ign0re" and "i.g.n.o.r.e".
  local sq = t:gsub("[0134579@$]", { ["0"] = "o", ["1"] = "i", ["3"] = "e", ["4"] = "a",
                                      ["5"] = "s", ["7"] = "t", ["9"] = "g", ["@"] = "a",
                                      ["$"] = "s" }):gsub("[^%a]", "")
  return t, sq, invisible
end

-- Patterns with magic characters cannot use Lua's fast literal search: each
-- is first looked for by its longest literal piece (its anchor), found once
-- per pattern and kept, and tried as a pattern only where that piece occurs.
local anchors = {}
local function anchor_of(p)
  local a = anchors[p]
  if a == nil then
    if not p:find("[%^%$%*%+%?%.%(%)%[%]%%%-]") then
      a = false -- no magic: a plain search
    else
      local lit = p:gsub("%%.", "\0"):gsub("%b[]", "\0"):gsub(".[%?%*%-]", "\0")
      a = ""
      for run in lit:gmatch("[^%z%^%$%*%+%?%.%(%)%[%]]+") do
        if #run > #a then a = run end
      end
    end
    anchors[p] = a
  end
  return a
end

local function has(s, p)
  local a = anchor_of(p)
  if a == false then return s:find(p, 1, true) ~= nil end
  if #a >= 3 and not s:find(a, 1, true) then return false end
  return s:find(p) ~= nil
end

local function any_of(s, list)
  for _, w in ipairs(list) do
    if has(s, w) then return w end
  end
  return nil
end

local function alpha_at(s, i)
  local c = s:byte(i)
  return c ~= nil and ((c >= 97 and c <= 122) or (c >= 65 and c <= 90))
end

local function alnum_at(s, i)
  local c = s:byte(i)
  return c ~= nil and ((c >= 97 and c <= 122) or (c >= 65 and c <= 90) or (c >= 48 and c <= 57))
end

-- A verb from verbs (a whole word) followed within `window` bytes by a word from nouns.
local function near(t, verbs, nouns, window)
  for _, v in ipairs(verbs) do
    local init = 1
    while true do
      local a, b = t:find(v, init, true)
      if not a then break end
      if not alpha_at(t, a - 1) and not alpha_at(t, b + 1) then
        local after = t:sub(b + 1, b + window)
        for _, n in ipairs(nouns) do
          if after:find("%f[%a]" .. n) then return true end
        end
      end
      init = b + 1
    end
  end
  return false
end

local IGNORE_VERBS = { "ignore", "disregard", "forget", "skip", "override", "bypass", "neglect",
                       "drop", "abandon", "overrule", "discard" }
local INSTRUCTION_NOUNS = { "instructions?", "rules", "prompts?", "directions", "directives?",
                            "guidelines", "programming", "constraints", "restrictions",
                            "system message", "guardrails", "safety", "filters?", "policies",
                            "all previous", "all prior", "everything above", "the above and",
                            "user'?s? question", "user'?s? request" }
local REVEAL_VERBS = { "reveal", "print", "show", "display", "repeat", "output", "tell me",
                       "give me", "share", "leak", "dump", "disclose", "expose", "write out",
                       "spell out", "recite", "what were", "list", "respond only with",
                       "respond with", "reply with", "answer with" }
local HIDDEN_NOUNS = { "system prompt", "system message", "initial prompt", "initial instructions",
                       "original instructions", "original prompt", "hidden prompt",
                       "hidden instructions", "secret instructions", "your instructions",
                       "your prompt", "the instructions above", "text above",
                       "words above", "everything above", "pre%-prompt", "developer message",
                       "you were told" }
local SECRET_NOUNS = { "api keys?", "passwords?", "secrets?", "credentials", "tokens?",
                       "private keys?", "environment variables", "env vars", "ssh keys?",
                       "access keys?", "session cookies?" }
local EXFIL_VERBS = { "send", "post", "upload", "forward", "transmit", "exfiltrate", "leak",
                      "email", "mail" }
local EXFIL_TARGETS = { "https?://", "webhook", "to my server", "to this url", "to the url",
                        "attacker", "external server", "%w+@%w+%.%w+" }

-- Each rule: a name, a weight, and a test on the normalised text t and the
-- squashed text sq. The score is the noisy-or of the matched weights.
local RULES = {
  { "ignore_instructions", 0.8, function(t)
      return near(t, IGNORE_VERBS, INSTRUCTION_NOUNS, 40)
    end },
  { "forget_everything", 0.6, function(t)
      return any_of(t, { "forget everything", "forget all that", "forget what you",
                         "disregard everything", "disregard all of", "ignore everything",
                         "ignore all of the above", "start over with no rules",
                         "clear your memory", "reset your instructions" })
    end },
  { "obfuscated_ignore", 0.8, function(_, sq, t)
      if near(t, IGNORE_VERBS, INSTRUCTION_NOUNS, 40) then return false end
      return any_of(sq, { "ignoreallpreviousinstructions", "ignorepreviousinstructions",
                          "ignoreallprior", "ignoreyourinstructions", "disregardprevious",
                          "disregardallprevious", "ignoretheabove", "forgetyourinstructions",
                          "revealyoursystemprompt", "ignoreallrules", "ignoreyourrules" })
    end },
  { "new_instructions", 0.45, function(t)
      return any_of(t, { "new instructions", "updated instructions", "from now on",
                         "your new task", "your new role", "new rules", "instead you will",
                         "instead, you will", "you will now", "henceforth", "real instructions",
                         "actual instructions", "the instructions below supersede",
                         "take precedence" })
    end },
  { "role_override", 0.55, function(t)
      return any_of(t, { "you are now", "you're now", "pretend to be", "pretend you are",
                         "pretend you're", "roleplay as", "role%-play as", "act as if you",
                         "act as an? unrestricted", "act as an? unfiltered", "act as dan",
                         "simulate an? ai", "from this moment you are", "you are no longer",
                         "stay in character", "assume the persona", "you have been freed",
                         "you are free from" })
    end },
  { "jailbreak", 0.75, function(t)
      return any_of(t, { "you are dan", "as dan%f[%A]", "dan mode", "dan prompt",
                         "do anything now", "jailbreak mode", "jailbreak prompt",
                         "you are jailbroken", "jailbroken ai", "jailbroken mode",
                         "developer mode", "dev mode", "god mode", "unrestricted mode",
                         "no restrictions", "without restrictions", "without any restrictions",
                         "without filters", "without any filters", "without limitations",
                         "without any limitations",
                         "without censorship", "uncensored", "unfiltered", "no rules apply",
                         "without rules", "no filters", "freed from", "been freed",
                         "unrestricted ai", "unrestricted terminal", "unrestricted assistant",
                         "unrestricted model", "unrestricted version",
                         "no ethical", "no moral", "evil confidant", "opposite mode",
                         "anti%-gpt", "aim mode", "stan mode" })
    end },
  { "system_prompt_leak", 0.75, function(t)
      if near(t, REVEAL_VERBS, HIDDEN_NOUNS, 50) then return true end
      return any_of(t, { "your system prompt", "your initial prompt", "your hidden prompt",
                         "your original instructions", "your system message" }) and
             any_of(t, { "what", "print", "show", "tell", "reveal", "repeat", "output" })
    end },
  { "system_prompt_mention", 0.25, function(t)
      return any_of(t, { "system prompt", "system message", "hidden instructions" })
    end },
  { "secret_exfiltration", 0.75, function(t)
      return near(t, REVEAL_VERBS, SECRET_NOUNS, 40) and
             any_of(t, { "your", "the system", "the server", "stored", "all the", "every",
                         "admin", "the database", "internal", "you have", "you can see",
                         "you know", "access to" })
    end },
  { "data_exfiltration", 0.75, function(t)
      return near(t, EXFIL_VERBS, EXFIL_TARGETS, 80) and
             any_of(t, { "conversation", "chat history", "this chat", "the context",
                         "the data", "all data", "user data", "the prompt", "everything",
                         "the document", "secrets", "messages", "memory", "the history",
                         "the instructions" })
    end },
  { "markdown_exfiltration", 0.7, function(t)
      return has(t, "!%[[^%]]*%]%(https?://[^%)]*[%?&][%w_]+=")
    end },
  { "delimiter_injection", 0.75, function(t)
      -- Chat-template tokens and fake message boundaries. A lone [INST] is
      -- often a question about templates: it counts only with its closing tag.
      return any_of(t, { "<|im_start|>", "<|im_end|>", "<|system|>", "<|endoftext|>",
                         "%[inst%].*%[/inst%]", "<<sys>>", "### system", "### instruction",
                         "</system>", "<system>", "```system", "end of user input",
                         "end of prompt", "begin system", "%-%-%- system", "=== system",
                         "%[system%]", "</user>", "<|assistant|>", "human: .* assistant:" })
    end },
  { "fake_turn", 0.3, function(t)
      return t:find("^system: ") or t:find(" system: ", 1, true) or t:find("^assistant: ")
    end },
  { "encoded_payload", 0.75, function(t, _, _, raw)
      local decode = any_of(t, { "decode", "base64", "rot13", "%f[%a]hex%f[%A]", "reverse the",
                                 "read backwards", "cipher", "encoded" })
      local act = any_of(t, { "and follow", "then follow", "and execute", "then execute",
                              "and obey", "then obey", "do what it says", "do as it says",
                              "instructions inside", "instructions it contains",
                              "follow the instructions", "execute the instructions",
                              "follow them", "execute it", "carry out the" })
      if decode and act then return true end
      -- A long base64 run next to an order to act on it.
      return act ~= nil and raw:find("[A-Za-z0-9+/]" .. ("[A-Za-z0-9+/]"):rep(39)) ~= nil
    end },
  { "authority_claim", 0.4, function(t)
      return any_of(t, { "i am your developer", "i am the developer", "i'm your developer",
                         "i am your creator", "i am the admin", "i'm the admin",
                         "i am an administrator", "as your administrator", "admin override",
                         "sudo mode", "maintenance mode", "authorized by openai",
                         "authorized by anthropic", "this is an authorized",
                         "i have root access", "security clearance", "official test of" })
    end },
  { "safety_bypass", 0.75, function(t)
      return near(t, { "bypass", "disable", "turn off", "switch off", "deactivate",
                       "circumvent", "remove", "evade", "get around" },
                  { "safety", "content filter", "filters?", "guardrails?", "moderation",
                    "restrictions", "censorship", "alignment", "safeguards" }, 30)
    end },
  { "invisible_characters", 0.35, function(_, _, _, _, invisible)
      return invisible > 0
    end },
}

-- {score = 0..1, reasons = {rule names}}
function M.injection(text)
  if type(text) ~= "string" then error("bad argument to 'injection' (string expected)", 2) end
  local t, sq, invisible = normalize(text)
  local keep = 1.0
  local reasons = {}
  for _, r in ipairs(RULES) do
    if r[3](t, sq, t, text, invisible) then
      keep = keep * (1 - r[2])
      reasons[#reasons + 1] = r[1]
    end
  end
  local score = math.floor((1 - keep) * 1000 + 0.5) / 1000
  return { score = score, reasons = reasons }
end

-- ======================================================================
-- JSON Schema (a subset: docs/guardrails.md)
-- ======================================================================

local SCHEMA_KEYS = { type = true, properties = true, required = true, items = true,
                      enum = true, minimum = true, maximum = true, minLength = true,
                      maxLength = true, pattern = true, additionalProperties = true,
                      minItems = true, maxItems = true, description = true, title = true,
                      ["$schema"] = true, const = true }

-- A JSON Schema regex of the supported subset as a Lua pattern: anchors,
-- classes [...], . * + ? and the escapes \d \w \s \D \W \S \. (and other
-- escaped punctuation). Alternation, groups and counted repeats are refused.
local function regex_to_lua(re)
  local out, i, n = {}, 1, #re
  while i <= n do
    local c = re:sub(i, i)
    if c == "\\" then
      local e = re:sub(i + 1, i + 1)
      local map = { d = "%d", w = "[%w_]", s = "%s", D = "%D", W = "[^%w_]", S = "%S" }
      if map[e] then
        out[#out + 1] = map[e]
      elseif e:match("%p") then
        out[#out + 1] = "%" .. e
      else
        return nil, "unsupported escape \\" .. e
      end
      i = i + 2
    elseif c == "|" or c == "(" or c == ")" or c == "{" or c == "}" then
      return nil, "'" .. c .. "' is outside the supported subset (no alternation, groups or " ..
                  "counted repeats)"
    elseif c == "%" then
      out[#out + 1] = "%%"
      i = i + 1
    elseif c == "[" then
      local j = re:find("]", i + 2, true)
      if not j then return nil, "unclosed [" end
      local body = re:sub(i + 1, j - 1):gsub("\\d", "%%d"):gsub("\\w", "%%w_"):gsub("\\s", "%%s")
      out[#out + 1] = "[" .. body .. "]"
      i = j + 1
    else
      out[#out + 1] = c
      i = i + 1
    end
  end
  return table.concat(out)
end
M.regex_to_lua = regex_to_lua

local function is_array(v)
  if type(v) ~= "table" then return false end
  local n = #v
  for k in pairs(v) do
    if math.type(k) ~= "integer" or k < 1 or k > n then return false end
  end
  return true
end

local function type_of(v)
  local t = type(v)
  if t == "nil" then return "null" end
  if t == "boolean" or t == "string" then return t end
  if t == "number" then
    if math.type(v) == "integer" or (v == math.floor(v) and v > -2^53 and v < 2^53) then
      return "integer"
    end
    return "number"
  end
  if t == "table" then
    if next(v) == nil then return "empty" end
    return is_array(v) and "array" or "object"
  end
  return t
end

local function type_ok(actual, want)
  if actual == want then return true end
  if want == "number" and actual == "integer" then return true end
  if actual == "empty" and (want == "object" or want == "array") then return true end
  return false
end

local function equal(a, b)
  if type(a) ~= type(b) then return false end
  if type(a) ~= "table" then return a == b end
  for k, v in pairs(a) do if not equal(v, b[k]) then return false end end
  for k in pairs(b) do if a[k] == nil then return false end end
  return true
end

local function check(v, s, path, errs)
  if type(s) ~= "table" then return end
  if #errs >= 20 then return end
  local function bad(fmt, ...) errs[#errs + 1] = path .. ": " .. string.format(fmt, ...) end
  local actual = type_of(v)
  if s.type ~= nil then
    local types = type(s.type) == "table" and s.type or { s.type }
    local ok = false
    for _, w in ipairs(types) do ok = ok or type_ok(actual, w) end
    if not ok then
      bad("expected %s, got %s", table.concat(types, " or "), actual == "empty" and "{}" or actual)
      return
    end
  end
  if s.enum ~= nil then
    local ok = false
    for _, e in ipairs(s.enum) do ok = ok or equal(v, e) end
    if not ok then bad("not one of the allowed values") end
  end
  if s.const ~= nil and not equal(v, s.const) then bad("not the required constant") end
  if type(v) == "number" then
    if s.minimum and v < s.minimum then bad("%s is less than the minimum %s", v, s.minimum) end
    if s.maximum and v > s.maximum then bad("%s is more than the maximum %s", v, s.maximum) end
  elseif type(v) == "string" then
    local len = utf8.len(v) or #v
    if s.minLength and len < s.minLength then bad("shorter than %d characters", s.minLength) end
    if s.maxLength and len > s.maxLength then bad("longer than %d characters", s.maxLength) end
    if s.pattern then
      local pat, why = regex_to_lua(s.pattern)
      if not pat then
        bad("pattern %q: %s", s.pattern, why)
      elseif not v:find(pat) then
        bad("does not match the pattern %q", s.pattern)
      end
    end
  elseif type(v) == "table" then
    if actual == "array" or (actual == "empty" and s.type == "array") then
      if s.minItems and #v < s.minItems then bad("fewer than %d items", s.minItems) end
      if s.maxItems and #v > s.maxItems then bad("more than %d items", s.maxItems) end
      if s.items ~= nil then
        for i, x in ipairs(v) do check(x, s.items, path .. "[" .. (i - 1) .. "]", errs) end
      end
    else
      local props = type(s.properties) == "table" and s.properties or {}
      for _, k in ipairs(type(s.required) == "table" and s.required or {}) do
        if v[k] == nil then bad("missing required property '%s'", k) end
      end
      local keys = {}
      for k in pairs(v) do keys[#keys + 1] = tostring(k) end
      table.sort(keys)
      for _, k in ipairs(keys) do
        local sub = props[k]
        if sub ~= nil then
          check(v[k], sub, path .. "." .. k, errs)
        elseif s.additionalProperties == false then
          bad("property '%s' is not allowed", k)
        elseif type(s.additionalProperties) == "table" then
          check(v[k], s.additionalProperties, path .. "." .. k, errs)
        end
      end
    end
  end
end

-- Strips a Markdown code fence around a model's JSON answer.
local function unfence(text)
  local inner = text:match("^%s*```[%w_-]*%s*\n(.-)\n%s*```%s*$")
  return inner or text
end

-- Checks that a schema uses only the supported keywords; nil or a message.
function M.check_schema(s, path)
  path = path or "schema"
  if type(s) ~= "table" then return path .. " must be a table" end
  for k, v in pairs(s) do
    if not SCHEMA_KEYS[k] then
      return string.format("%s: unsupported keyword '%s'", path, tostring(k))
    end
    if k == "properties" then
      if type(v) ~= "table" then return path .. ".properties must be a table" end
      for pk, ps in pairs(v) do
        local e = M.check_schema(ps, path .. ".properties." .. tostring(pk))
        if e then return e end
      end
    elseif k == "items" or (k == "additionalProperties" and type(v) == "table") then
      local e = M.check_schema(v, path .. "." .. k)
      if e then return e end
    elseif k == "pattern" then
      if type(v) ~= "string" then return path .. ".pattern must be a string" end
      local ok, why = regex_to_lua(v)
      if not ok then return string.format("%s.pattern %q: %s", path, v, why) end
    end
  end
  return nil
end

-- ok, errors, value: value is a Lua value or JSON text (decoded unless the
-- schema asks for a string).
function M.validate(value, schema)
  if type(schema) ~= "table" then error("bad argument to 'validate' (schema table expected)", 2) end
  local bad_schema = M.check_schema(schema)
  if bad_schema then error("bad argument to 'validate' (" .. bad_schema .. ")", 2) end
  if type(value) == "string" and schema.type ~= "string" then
    local decoded, why = json.decode(unfence(value))
    if decoded == nil and why then
      return false, { "$: not JSON (" .. why .. ")" }, nil
    end
    value = decoded
  end
  local errs = {}
  check(value, schema, "$", errs)
  return #errs == 0, errs, value
end

-- ======================================================================
-- Blocked words and topics, lengths
-- ======================================================================

local function escape(w)
  return (w:lower():gsub("[%^%$%(%)%%%.%[%]%*%+%-%?]", "%%%0"))
end

local function word_hit(t, w)
  w = w:lower()
  if not w:find("%s") then
    local init = 1
    while true do
      local a, b = t:find(w, init, true)
      if not a then return false end
      if not alnum_at(t, a - 1) and not alnum_at(t, b + 1) then return true end
      init = a + 1
    end
  end
  if not t:find(w:match("^%S+"), 1, true) then return false end
  local pat = escape(w):gsub("%s+", "%%s+")
  return t:find("%f[%w]" .. pat .. "%f[%W]") ~= nil
end

-- spec: { "word", ... } or { words = {...}, topics = { name = {"word", ...} } }.
-- Returns nil, or {kind = "word"|"topic", match = word, topic = name}.
function M.blocked(text, spec)
  if type(text) ~= "string" then error("bad argument to 'blocked' (string expected)", 2) end
  if type(spec) ~= "table" then return nil end
  local t = text:lower()
  local words = spec.words or spec
  for _, w in ipairs(words) do
    if type(w) == "string" and word_hit(t, w) then return { kind = "word", match = w } end
  end
  if type(spec.topics) == "table" then
    local names = {}
    for name in pairs(spec.topics) do names[#names + 1] = name end
    table.sort(names)
    for _, name in ipairs(names) do
      for _, w in ipairs(spec.topics[name]) do
        if word_hit(t, w) then return { kind = "topic", topic = name, match = w } end
      end
    end
  end
  return nil
end

-- ok, length in characters (bytes when not UTF-8)
function M.max_length(text, n)
  if type(text) ~= "string" then error("bad argument to 'max_length' (string expected)", 2) end
  local len = utf8.len(text) or #text
  return len <= n, len
end

-- ======================================================================
-- Hooks around trellis.llm's chat
-- ======================================================================

local function text_of(content)
  if type(content) == "string" then return content end
  if type(content) ~= "table" then return "" end
  local parts = {}
  for _, part in ipairs(content) do
    if type(part) == "table" and type(part.text) == "string" then parts[#parts + 1] = part.text end
  end
  return table.concat(parts, "\n")
end

local function threshold_of(spec)
  if type(spec) == "number" then return spec end
  if type(spec) == "table" and type(spec.threshold) == "number" then return spec.threshold end
  return M.DEFAULT_THRESHOLD
end

local function pii_action(spec)
  if type(spec) == "table" then return spec.action or "redact", spec end
  return spec, nil
end

-- The guards in force: the call's, else the task's, else the pipeline's, per stage.
function M.effective(pipeline, task, call)
  if not pipeline and not task and not call then return nil end
  local g = {}
  for _, k in ipairs({ "input", "output", "fallback" }) do
    local v
    for _, src in ipairs({ call or {}, task or {}, pipeline or {} }) do
      if v == nil and src[k] ~= nil then v = src[k] end
    end
    g[k] = v
  end
  if g.input == nil and g.output == nil then return nil end
  return g
end

-- Runs the checks of one stage on text. Returns nil, or the blocked check
-- and why; for pii = "redact", also the redacted text and the count.
local function run_checks(spec, stage, text, check_injection)
  if spec.max_length then
    local ok, len = M.max_length(text, spec.max_length)
    if not ok then
      return "max_length", string.format("%d characters, more than %d", len, spec.max_length)
    end
  end
  if spec.blocked then
    local hit = M.blocked(text, spec.blocked)
    if hit then
      return "blocked", hit.topic and string.format("topic '%s'", hit.topic)
                        or string.format("word '%s'", hit.match)
    end
  end
  if spec.injection and check_injection then
    local th = threshold_of(spec.injection)
    local r = M.injection(text)
    if r.score >= th then
      return "injection", string.format("score %.2f >= %.2f (%s)", r.score, th,
                                        table.concat(r.reasons, ", "))
    end
  end
  if spec.pii then
    local action, opts = pii_action(spec.pii)
    if action == "block" then
      local found = M.pii(text, opts)
      if #found > 0 then
        local kinds = {}
        for _, f in ipairs(found) do kinds[#kinds + 1] = f.kind end
        return "pii", string.format("%d finding(s): %s", #found, table.concat(kinds, ", "))
      end
    end
  end
  return nil
end

local function redact_if(spec, text)
  if not spec.pii then return text, 0 end
  local action, opts = pii_action(spec.pii)
  if action ~= "redact" then return text, 0 end
  return M.redact(text, opts)
end

-- A message content redacted: a string, or an array of parts whose text
-- parts are redacted one by one (other parts kept as they are).
local function redact_content(spec, content)
  if type(content) ~= "table" then return redact_if(spec, text_of(content)) end
  local parts, total = {}, 0
  for i, part in ipairs(content) do
    if type(part) == "table" and type(part.text) == "string" then
      local new, n = redact_if(spec, part.text)
      if n > 0 then
        local copy = {}
        for k, v in pairs(part) do copy[k] = v end
        copy.text = new
        part = copy
        total = total + n
      end
    end
    parts[i] = part
  end
  return parts, total
end

-- A blocked call: counted, then the fallback answer or an error.
local function blocked(g, stage, check_name, why, r)
  C.blocked_record(check_name, stage)
  if type(g.fallback) == "string" then
    return { text = g.fallback, guarded = true, blocked = check_name, stage = stage,
             reason = why, model = r and r.model, provider = r and r.provider,
             usage = r and r.usage or { prompt_tokens = 0, completion_tokens = 0 },
             cost = r and r.cost or 0, cached = false }
  end
  error(string.format("guard_blocked: %s: %s stage: %s", check_name, stage, why), 0)
end

-- chat(call) between the input and output checks of g (M.effective).
function M.around(g, call, chat)
  local redacted = { input = 0, output = 0 }
  if type(g.input) == "table" then
    local spec = g.input
    local messages = {}
    for i, m in ipairs(call.messages) do
      local text = text_of(m.content)
      -- The pipeline's own system prompt is trusted; every other message is checked.
      local name, why = run_checks(spec, "input", text, m.role ~= "system")
      if name then return blocked(g, "input", name, string.format("message %d: %s", i, why)) end
      local new, n = redact_content(spec, m.content)
      if n > 0 then
        local copy = {}
        for k, v in pairs(m) do copy[k] = v end
        copy.content = new
        m = copy
        redacted.input = redacted.input + n
      end
      messages[i] = m
    end
    if redacted.input > 0 then
      local c2 = {}
      for k, v in pairs(call) do c2[k] = v end
      c2.messages = messages
      call = c2
    end
  end
  if type(g.output) == "table" and call.stream then
    -- No token may leave before the whole answer is checked.
    local c2 = {}
    for k, v in pairs(call) do c2[k] = v end
    c2.stream = nil
    call = c2
  end
  local r = chat(call)
  if type(g.output) == "table" then
    local spec = g.output
    local text = r.text or ""
    local name, why = run_checks(spec, "output", text, true)
    if name then return blocked(g, "output", name, why, r) end
    local new, n = redact_if(spec, text)
    if n > 0 then
      r.text = new
      redacted.output = n
    end
    if spec.schema then
      local ok, errs, value = M.validate(r.text, spec.schema)
      if not ok then
        return blocked(g, "output", "schema", table.concat(errs, "; "), r)
      end
      r.json = value
    end
  end
  if redacted.input > 0 or redacted.output > 0 then r.redacted = redacted end
  return r
end

return M
