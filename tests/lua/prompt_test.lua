-- trellis.prompt: rendering, dotted variables, the digest, and the errors.
-- Run by tests/unit/test_lua_modules.c; returns how many checks ran.
local prompt = require "trellis.prompt"
local n = 0
local function eq(got, want, what)
  n = n + 1
  if got ~= want then
    error(("%s: expected %s, got %s"):format(what, tostring(want), tostring(got)), 2)
  end
end

local p = prompt.template { name = "qa", text = "Q: {{question}}\nC: {{ ctx.body }} ({{n}})" }
eq(p:render { question = "why?", ctx = { body = "because" }, n = 3 }, "Q: why?\nC: because (3)",
   "render")
-- printf 'Q: {{question}}\nC: {{ ctx.body }} ({{n}})' | sha256sum
eq(p.digest, "ac9acbca2e849c03217357575bd396b61f15cfa774603da3d9c1556d6b84ca87", "digest")
eq(prompt.digest(p.text), p.digest, "digest function")
eq(#p.variables, 3, "variables")
eq(p.variables[2], "ctx.body", "dotted variable")
eq(p.name, "qa", "name")

local ok, err = pcall(p.render, p, { question = "x", n = 1 })
eq(ok, false, "missing variable fails")
eq(err:find("prompt 'qa': missing variable 'ctx.body'", 1, true) ~= nil, true, err)
ok, err = pcall(p.render, p, { question = {}, ctx = { body = "" }, n = 1 })
eq(err:find("variable 'question' is a table", 1, true) ~= nil, true, err)

-- Values are literal: no pattern escapes leak through gsub.
eq(prompt.template("{{a}}|{{a}}"):render { a = "100% %1" }, "100% %1|100% %1", "literal")
eq(prompt.template("no variables"):render(), "no variables", "no variables")
eq(prompt.template("{{flag}}"):render { flag = false }, "false", "boolean")
ok = pcall(prompt.template, { text = 42 })
eq(ok, false, "text must be a string")
return n
