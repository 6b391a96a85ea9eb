-- trellis.ingest: documents into chunks with their sources, offsets and
-- digests, and folders into an index with no work for unchanged files.
--
--   local ingest = require "trellis.ingest"
--   local chunks = ingest.text(s, { format = "markdown", source = "x.md" })
--   local chunks, info = ingest.file("docs", "guide.md")
--   local stats = ingest.folder { root = "docs", glob = "*.md", index = idx }
--   local chunks = ingest.url("https://example.org/page.html")   -- needs trellis.http
--
-- A chunk is { id = digest, text = normalised text, source = ..., meta =
-- { source, start, stop, digest, heading, format, record } }: start and stop
-- are 0-based byte offsets, stop exclusive, into the file (Markdown, text),
-- into the extracted text (HTML), or the JSON line's range (JSON Lines).
-- The id is the sha256 of the normalised text, so a chunk seen twice is
-- indexed once. The heavy lifting is C, reached through `...`.
local native = ...

local M = {}

local FORMATS = {
  md = "markdown", markdown = "markdown", txt = "text", text = "text", rst = "text",
  html = "html", htm = "html", jsonl = "jsonl", ndjson = "jsonl",
}

-- The format of a path from its extension ("text" when unknown).
function M.format_of(path)
  local ext = tostring(path):match("%.([%w]+)$")
  return (ext and FORMATS[ext:lower()]) or "text"
end

-- Overlap defaults to 100 bytes, or a tenth of a smaller size.
local function chunk_opts(o)
  local size = o.size or 1000
  return { size = size, overlap = o.overlap or math.min(100, size // 10), markdown = o.markdown }
end

local function emit(out, seen, text, meta)
  local digest = native.sha256(text)
  if seen[digest] then return end
  seen[digest] = true
  meta.digest = digest
  out[#out + 1] = { id = digest, text = text, source = meta.source, meta = meta }
end

local function chunk_into(out, seen, body, base, o, format, source)
  local copts = chunk_opts(o)
  if copts.markdown == nil then copts.markdown = (format == "markdown" or format == "html") end
  for _, c in ipairs(native.chunk(body, copts)) do
    local text = native.normalize(body:sub(c.start + 1, c.stop))
    if #text > 0 then
      local meta = { source = source, start = base.start or c.start,
                     stop = base.stop or c.stop, heading = c.heading, format = format,
                     record = base.record }
      emit(out, seen, text, meta)
    end
  end
end

-- text(s, {format=, source=, size=, overlap=, markdown=, field=}) -> chunks, skipped
-- (skipped counts JSON lines without the text field).
function M.text(s, o)
  o = o or {}
  if type(s) ~= "string" then error("ingest.text expects a string", 2) end
  local format = o.format or "text"
  local source = o.source
  local out, seen = {}, o.seen or {}
  if format == "html" then
    chunk_into(out, seen, native.html_text(s), {}, o, format, source)
  elseif format == "jsonl" then
    local records, skipped = native.jsonl(s, o.field)
    for _, r in ipairs(records) do
      chunk_into(out, seen, r.text, { start = r.start, stop = r.stop, record = r.line }, o,
                 format, source)
    end
    return out, skipped
  elseif format == "markdown" or format == "text" then
    chunk_into(out, seen, s, {}, o, format, source)
  else
    error("ingest: unknown format '" .. tostring(format) .. "'", 2)
  end
  return out, 0
end

-- file(root, path, opts) -> chunks, {digest, mtime, size}
function M.file(root, path, o)
  o = o or {}
  local data, info = native.read(root, path)
  local oo = setmetatable({ format = o.format or M.format_of(path), source = o.source or path },
                          { __index = o })
  return (M.text(data, oo)), info
end

-- list(root, glob) -> the sorted paths under root matching glob ("*" crosses "/").
function M.list(root, glob)
  return native.list(root, glob)
end

-- url(url, opts) -> chunks: fetched with trellis.http (GET), the format from
-- the Content-Type unless opts.format says.
function M.url(url, o)
  o = o or {}
  local ok, http = pcall(require, "trellis.http")
  if not ok then error("ingest.url needs trellis.http (a worker)", 2) end
  local res = http.request { method = "GET", url = url, timeout = o.timeout or 30 }
  if res.status < 200 or res.status > 299 then
    error(("http_error: GET %s answered %d"):format(url, res.status), 2)
  end
  local ctype = ""
  for k, v in pairs(res.headers or {}) do
    if tostring(k):lower() == "content-type" then ctype = tostring(v):lower() end
  end
  local format = o.format
  if format == nil then
    if ctype:find("html", 1, true) then format = "html"
    elseif ctype:find("markdown", 1, true) then format = "markdown"
    elseif ctype:find("ndjson", 1, true) or ctype:find("jsonl", 1, true) then format = "jsonl"
    else format = M.format_of(url:match("^[^?#]*")) end
  end
  local oo = setmetatable({ format = format, source = o.source or url }, { __index = o })
  return (M.text(res.body or "", oo))
end

-- Vectors for the chunks' texts from opts.embed: a function(texts) -> vectors,
-- or true for trellis.llm.embed with opts.model / opts.provider.
local function embed(chunks, o)
  if not o.embed or #chunks == 0 then return end
  local fn = o.embed
  if fn == true then
    local llm = require "trellis.llm"
    fn = function(texts)
      return llm.embed({ input = texts, model = o.model, provider = o.provider }).vectors
    end
  end
  local batch = o.batch or 64
  for i = 1, #chunks, batch do
    local texts = {}
    for j = i, math.min(i + batch - 1, #chunks) do texts[#texts + 1] = chunks[j].text end
    local vecs = fn(texts)
    for j = 1, #texts do chunks[i + j - 1].vector = vecs[j] end
  end
end

-- folder{root=, glob=, index=, embed=, size=, overlap=, format=}
--   -> {files=, changed=, unchanged=, removed=, chunks=, docs=}
-- With an index: a file whose size and mtime match the index's manifest is
-- not read; one whose digest matches is not chunked; a changed file's old
-- chunks are deleted before its new ones are upserted, then the manifest
-- row is written (so a failure midway redoes that file next time); files
-- gone from the folder lose their chunks. Without an index, docs holds
-- every chunk (deduplicated by digest).
function M.folder(o)
  if type(o) ~= "table" or type(o.root) ~= "string" then
    error("ingest.folder expects {root = folder, ...}", 2)
  end
  local idx = o.index
  local stats = { files = 0, changed = 0, unchanged = 0, removed = 0, chunks = 0 }
  local docs, seen = {}, {}
  local present = {}
  for _, path in ipairs(native.list(o.root, o.glob)) do
    stats.files = stats.files + 1
    present[path] = true
    local old = idx and idx:manifest_get(path)
    local st = old and native.stat(o.root, path)
    if old and st and st.mtime == old.mtime and st.size == old.size then
      stats.unchanged = stats.unchanged + 1
    else
      local data, info = native.read(o.root, path)
      if old and old.digest == info.digest then
        idx:manifest_put(path, info)
        stats.unchanged = stats.unchanged + 1
      else
        local oo = setmetatable({ format = o.format or M.format_of(path), source = path,
                                  seen = idx and {} or seen }, { __index = o })
        local chunks = M.text(data, oo)
        stats.changed = stats.changed + 1
        stats.chunks = stats.chunks + #chunks
        if idx then
          embed(chunks, o)
          idx:delete_source(path)
          idx:upsert(chunks)
          idx:manifest_put(path, info)
        else
          for _, c in ipairs(chunks) do docs[#docs + 1] = c end
        end
      end
    end
  end
  if idx then
    for _, path in ipairs(idx:manifest_paths()) do
      if not present[path] and (o.glob == nil or M.matches(path, o.glob)) then
        idx:delete_source(path)
        idx:manifest_del(path)
        stats.removed = stats.removed + 1
      end
    end
  else
    embed(docs, o)
    stats.docs = docs
  end
  return stats
end

-- Whether path matches a glob as list() matches it (fnmatch without flags:
-- "*" and "?" cross "/", [set] and [!set] are classes).
function M.matches(path, glob)
  local out, i, n = { "^" }, 1, #glob
  while i <= n do
    local ch = glob:sub(i, i)
    local j = ch == "[" and glob:find("]", i + 2, true)
    if ch == "*" then
      out[#out + 1] = ".*"
    elseif ch == "?" then
      out[#out + 1] = "."
    elseif j then
      local set = glob:sub(i + 1, j - 1):gsub("^!", "^"):gsub("%%", "%%%%")
      out[#out + 1] = "[" .. set .. "]"
      i = j
    elseif ch:match("%p") then
      out[#out + 1] = "%" .. ch
    else
      out[#out + 1] = ch
    end
    i = i + 1
  end
  out[#out + 1] = "$"
  return path:match(table.concat(out)) ~= nil
end

M.normalize = native.normalize
M.html_text = native.html_text
M.digest = native.sha256

return M
