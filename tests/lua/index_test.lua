-- trellis.index from Lua: BM25, vector and hybrid search, meta round trip,
-- delete and delete_source, the data folder rules and the errors.
-- Run by tests/unit/test_lua_modules.c; returns how many checks ran.
local index = require "trellis.index"
local n = 0
local function eq(got, want, what)
  n = n + 1
  if got ~= want then
    error(("%s: expected %s, got %s"):format(what, tostring(want), tostring(got)), 2)
  end
end
local function fails(fn, text, what)
  local ok, err = pcall(fn)
  eq(ok, false, what .. " fails")
  eq(tostring(err):find(text, 1, true) ~= nil, true, what .. ": " .. tostring(err))
end

local idx = index.open("sub/test.db", { dim = 2 })
eq(idx:dim(), 2, "dim")
idx:upsert {
  { id = "a", text = "the quick brown fox", vector = { 1, 0 },
    meta = { source = "a.md", start = 0, tags = { "x" } } },
  { id = "b", text = "lazy dogs sleep", vector = { 0, 1 }, meta = { source = "b.md" } },
  { id = 3, text = "quick quick quick", vector = { 0.6, 0.8 } },
}
eq(idx:count(), 3, "count")

-- BM25 by default: "3" has tf 3 in 3 tokens, "a" tf 1 in 4.
local hits = idx:search { query = "Quick!", k = 5 }
eq(#hits, 2, "bm25 hits")
eq(hits[1].id, "3", "bm25 first (a numeric id comes back as a string)")
eq(hits[2].id, "a", "bm25 second")
eq(hits[2].text, "the quick brown fox", "text")
eq(hits[2].meta.tags[1], "x", "meta round trip")
eq(hits[2].meta.start, 0, "meta integer")
eq(hits[2].source, "a.md", "source taken from meta.source")
eq(hits[1].meta, nil, "no meta")

-- Vector: cos((0,1), b) = 1, cos((0,1), 3) = 0.8.
hits = idx:search { vector = { 0, 1 }, k = 2 }
eq(#hits, 2, "vector hits")
eq(hits[1].id, "b", "vector first")
eq(math.abs(hits[2].score - 0.8) < 1e-6, true, "cosine 0.8")

-- Hybrid (the default with both): BM25 [a], vectors [b, 3, a]:
-- a = 1/61 + 1/63 = 0.032266, b = 1/61 = 0.016393, 3 = 1/62 = 0.016129.
hits = idx:search { query = "fox", vector = { 0, 1 }, k = 3 }
eq(hits[1].id .. hits[2].id .. hits[3].id, "ab3", "hybrid order")
eq(math.abs(hits[1].score - (1 / 61 + 1 / 63)) < 1e-12, true, "rrf score")
hits = idx:search { query = "fox", vector = { 0, 1 }, k = 3, rrf_k = 1 }
-- k = 1: a = 1/2 + 1/4 = 0.75, b = 1/2, 3 = 1/3.
eq(math.abs(hits[1].score - 0.75) < 1e-12, true, "rrf_k")

eq(idx:delete("a"), true, "delete")
eq(idx:delete("a"), false, "delete again")
eq(#idx:search { query = "fox" }, 0, "deleted text gone")
eq(idx:delete_source("b.md"), 1, "delete_source")
eq(idx:count(), 1, "count after deletes")

-- Replacing a document keeps one copy.
idx:upsert { { id = 3, text = "slow", vector = { 1, 1 } } }
eq(idx:count(), 1, "upsert replaces")
eq(idx:search { query = "slow" }[1].id, "3", "new text found")

fails(function() idx:upsert { { id = "z", text = "x", vector = { 1, 2, 3 } } } end,
      "dimension 3", "wrong dimension")
fails(function() idx:upsert { { text = "no id" } } end, "needs an id", "missing id")
fails(function() idx:upsert { { id = "f", text = "x", meta = { f = print } } } end,
      "cannot encode a function", "meta with a function")
fails(function() idx:search { query = "x", mode = "magic" } end, "mode must be", "bad mode")
fails(function() idx:search { query = "x", k = 0 } end, "k must be", "bad k")
fails(function() index.open("../escape.db") end, "'..'", "dot-dot path")
fails(function() index.open("/tmp/elsewhere.db") end, "outside the data folder", "absolute path")
idx:close()
idx:close()
fails(function() idx:count() end, "closed", "closed index")

-- An absolute path inside the data folder is the same file; the dimension persists.
local again = index.open(TEST_DIR .. "/sub/test.db")
eq(again:dim(), 2, "dim persisted")
eq(again:count(), 1, "documents persisted")
fails(function() index.open("sub/test.db", { dim = 3 }) end, "dimension 2", "dim mismatch")
do
  local scoped <close> = index.open("scoped.db")
  eq(scoped:count(), 0, "new index empty")
end
again:close()
return n
