-- trellis.prompt: templates with {{variables}} and a digest of their text.
--
--   local prompt = require "trellis.prompt"
--   local p = prompt.template { name = "answer", text = "Q: {{question}}\n{{context}}" }
--   local text = p:render { question = "...", context = "..." }
--   -- p.digest: sha256 of the template text, what runs record as prompt_digest
--
-- A variable is {{name}} or {{a.b}} (a field of a table), spaces allowed
-- inside the braces. A missing variable raises an error naming it; strings,
-- numbers and booleans are written with tostring, anything else raises.
-- The native table (sha256) comes from the C half as `...`.
local native = ...

local M = {}

local VAR = "{{%s*([%a_][%w_%.]*)%s*}}"

local Template = {}
Template.__index = Template

local function lookup(vars, path)
  local v = vars
  for part in path:gmatch("[^%.]+") do
    if type(v) ~= "table" then return nil end
    v = v[part]
  end
  return v
end

-- template{name=, text=, version=} (or a string) -> template object.
function M.template(spec)
  if type(spec) == "string" then spec = { text = spec } end
  if type(spec) ~= "table" or type(spec.text) ~= "string" then
    error("prompt.template expects a table with a string 'text'", 2)
  end
  local vars, seen = {}, {}
  for name in spec.text:gmatch(VAR) do
    if not seen[name] then
      seen[name] = true
      vars[#vars + 1] = name
    end
  end
  return setmetatable({
    name = spec.name or "prompt",
    version = spec.version,
    text = spec.text,
    digest = native.sha256(spec.text),
    variables = vars,
  }, Template)
end

-- p:render(vars) -> the text with every {{variable}} replaced.
function Template:render(vars)
  vars = vars or {}
  if type(vars) ~= "table" then
    error("prompt '" .. self.name .. "': render expects a table of variables", 2)
  end
  local out = self.text:gsub(VAR, function(name)
    local v = lookup(vars, name)
    local t = type(v)
    if v == nil then
      error("prompt '" .. self.name .. "': missing variable '" .. name .. "'", 0)
    elseif t == "string" then
      return v
    elseif t == "number" or t == "boolean" then
      return tostring(v)
    end
    error("prompt '" .. self.name .. "': variable '" .. name .. "' is a " .. t
          .. ", not a string or number", 0)
  end)
  return out
end

-- The digest of any text, as templates compute theirs.
function M.digest(text)
  return native.sha256(text)
end

return M
