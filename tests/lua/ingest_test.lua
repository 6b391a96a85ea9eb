-- trellis.ingest from Lua: chunks with offsets, dedupe, HTML, JSON Lines,
-- and folders into an index (unchanged files do no work, changed files
-- replace their chunks, removed files lose them), with embeddings.
-- Run by tests/unit/test_lua_modules.c; returns how many checks ran.
local ingest = require "trellis.ingest"
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

-- Markdown: one chunk per section; offsets point at the source bytes.
local md = "# Guide\n\nIntro  text\r\nhere.\n\n## Install\n\nRun make.\n"
local chunks = ingest.text(md, { format = "markdown", source = "g.md" })
eq(#chunks, 2, "markdown chunks")
local c2 = chunks[2]
eq(c2.meta.heading, "Install", "heading")
eq(md:sub(c2.meta.start + 1, c2.meta.stop), "## Install\n\nRun make.", "offsets")
eq(c2.text, "## Install\n\nRun make.", "text")
eq(chunks[1].text, "# Guide\n\nIntro text\nhere.", "normalised text")
eq(chunks[1].id, ingest.digest(chunks[1].text), "id is the digest")
eq(chunks[1].meta.digest, chunks[1].id, "digest in meta")
eq(chunks[1].source, "g.md", "source")

-- Dedupe by digest: the repeated paragraph is dropped.
chunks = ingest.text("Same para.\n\nOther para.\n\nSame para.", { size = 16, overlap = 0 })
eq(#chunks, 2, "dedupe")
eq(chunks[2].text, "Other para.", "dedupe keeps order")

-- HTML: text extracted, entities decoded, scripts dropped, headings kept.
chunks = ingest.text("<h1>T</h1><p>a &amp; b</p><script>x()</script>", { format = "html" })
eq(#chunks, 1, "html chunks")
eq(chunks[1].text, "# T\n\na & b", "html text")

-- JSON Lines: records with a text field; others counted as skipped.
local jl = '{"text":"one"}\nnot json\n{"id":2}\n{"text":"two"}\n'
local skipped
chunks, skipped = ingest.text(jl, { format = "jsonl" })
eq(#chunks, 2, "jsonl records")
eq(skipped, 2, "jsonl skipped")
eq(chunks[2].meta.record, 4, "jsonl line number")
eq(chunks[2].meta.start, 33, "jsonl line offset: 15 + 9 + 9")
eq(jl:sub(chunks[2].meta.start + 1, chunks[2].meta.stop), '{"text":"two"}', "jsonl range")

-- Folders into an index.
test_write("docs/a.md", "# A\n\nAlpha apples.\n")
test_write("docs/sub/b.md", "# B\n\nBravo bananas.\n")
test_write("docs/c.txt", "Charlie cherries.")
test_write("docs/.hidden.md", "# Hidden\n\nnever read\n")
local root = TEST_DIR .. "/docs"
eq(table.concat(ingest.list(root, "*.md"), ","), "a.md,sub/b.md", "list")
local idx = index.open("docs.db")
local s = ingest.folder { root = root, glob = "*.md", index = idx }
eq(s.files, 2, "files")
eq(s.changed, 2, "changed the first time")
eq(s.chunks, 2, "chunks")
local hits = idx:search { query = "bananas" }
eq(#hits, 1, "found")
eq(hits[1].meta.source, "sub/b.md", "hit source")
eq(hits[1].meta.heading, "B", "hit heading")

s = ingest.folder { root = root, glob = "*.md", index = idx }
eq(s.changed, 0, "unchanged folder does no work")
eq(s.unchanged, 2, "unchanged")

test_write("docs/a.md", "# A\n\nAlpha apricots, and more.\n")
s = ingest.folder { root = root, glob = "*.md", index = idx }
eq(s.changed, 1, "one file changed")
eq(#idx:search { query = "apples" }, 0, "old chunk gone")
eq(#idx:search { query = "apricots" }, 1, "new chunk in")

eq(test_remove("docs/sub/b.md"), true, "remove")
s = ingest.folder { root = root, glob = "*.md", index = idx }
eq(s.removed, 1, "removed file")
eq(#idx:search { query = "bananas" }, 0, "removed file's chunks gone")
eq(idx:count(), 1, "one document left")

-- Embeddings through a function (trellis.llm.embed in a worker).
local idx2 = index.open("emb.db")
s = ingest.folder { root = root, index = idx2, embed = function(texts)
  local v = {}
  for i, t in ipairs(texts) do v[i] = { #t, 1 } end
  return v
end }
eq(s.changed, 2, "a.md and c.txt")
eq(idx2:dim(), 2, "dimension from the first vector")
eq(#idx2:search { vector = { 1, 0 }, k = 5 }, 2, "vector search after ingest")

-- Without an index: every chunk comes back.
s = ingest.folder { root = root }
eq(#s.docs, 2, "docs without an index")

-- Confinement.
local data, info = ingest.file(root, "c.txt")
eq(data[1].text, "Charlie cherries.", "file")
eq(info.size, 17, "file size")
fails(function() ingest.file(root, "../docs.db") end, "leaves the ingestion root", "dot-dot")
fails(function() ingest.list("/etc") end, "outside the allowed roots", "foreign root")
fails(function() ingest.url("http://127.0.0.1:1/") end, "trellis.http", "url without http")
eq(ingest.matches("sub/x.md", "*.md"), true, "glob crosses folders")
eq(ingest.matches("x.txt", "*.md"), false, "glob")
eq(ingest.matches("a/b1.md", "*[0-9].md"), true, "glob class")
eq(ingest.matches("x.md", "[!x].md"), false, "glob negated class")
eq(ingest.matches("y.md", "[!x].md"), true, "glob negated class matches")
eq(ingest.matches("a+b(1).md", "a+b(?).md"), true, "glob magic characters are literal")
idx:close()
idx2:close()
return n
