-- ingest_docs.lua: a folder of documents into one index file, one task per
-- file.
--
--   files  ->  ingest (one instance per file, map = "files")  ->  summary
--
-- `files` lists the folder (sorted, `glob`); each `ingest` instance brings
-- one file up to date through ingest.folder restricted to that file, so the
-- manifest kept in the index decides: a file whose size and mtime are
-- unchanged is not read, one whose digest is unchanged is not chunked, a
-- changed one has its old chunks replaced. `summary` adds the counts up and
-- removes from the index the files that are gone from the folder. Re-ingesting an
-- unchanged folder reads no file and writes no chunk: changed = 0,
-- chunks = 0.
--
-- Params:
--   folder   the folder to ingest ("docs", relative to the worker's working
--            folder; it must lie inside TRELLIS_INGEST_ROOTS)
--   glob     which files ("*.md"; "*" also crosses "/")
--   index    the index file, relative to the worker's data folder
--            (TRELLIS_DATA_DIR) ("docs.db")
--   size, overlap   chunk size and overlap in bytes (800, 80)
--   embed    true: store a vector per chunk from trellis.llm.embed, so that
--            rag_answer ranks by hybrid fusion (false: BM25 only)
--   embed_model, embed_provider   passed to llm.embed (the provider's own
--            defaults when absent)
--
-- Output: {"summary": {"files": F, "changed": C, "unchanged": U, "removed": R,
-- "chunks": N, "docs": D, "index": "docs.db", "vectors": bool}} where chunks
-- counts the chunks written by this run and docs the chunks the index holds.
--
-- Tasks that write the index may run on several workers of one machine at
-- once: SQLite serialises their writes (docs/rag.md, "Files").
local trellis = require "trellis"

-- A glob that matches exactly `path` (fnmatch: the special characters become
-- one-character classes).
local function exact_glob(path)
  return (path:gsub("[%*%?%[]", function(c) return "[" .. c .. "]" end))
end

local function open_index(params)
  return require("trellis.index").open(params.index)
end

return trellis.pipeline {
  name = "ingest_docs",
  version = "1",
  extra_params = true, -- optional params (nil unless a run gives them)
  params = {
    folder = "docs", glob = "*.md", index = "docs.db", size = 800, overlap = 80,
    embed = false,
  },
  tasks = {
    trellis.task {
      name = "files",
      run = function(ctx)
        local p = ctx.params
        local paths = require("trellis.ingest").list(p.folder, p.glob)
        ctx.log("listed", #paths, "files in", p.folder)
        return paths
      end,
    },
    trellis.task {
      name = "ingest",
      map = "files",
      retries = 2,
      backoff = 0.2,
      run = function(ctx, path)
        local ingest = require "trellis.ingest"
        local p = ctx.params
        local idx <close> = open_index(p)
        local s = ingest.folder {
          root = p.folder, glob = exact_glob(path), index = idx,
          size = p.size, overlap = p.overlap,
          embed = p.embed and true or nil, model = p.embed_model, provider = p.embed_provider,
        }
        if s.files ~= 1 then
          error(("file '%s' vanished from '%s' during the run"):format(path, p.folder))
        end
        if s.changed > 0 then ctx.log("ingested", path, "into", s.chunks, "chunks") end
        return { path = path, changed = s.changed == 1, chunks = s.chunks }
      end,
    },
    trellis.task {
      name = "summary",
      after = { "ingest" },
      run = function(ctx, results)
        local p = ctx.params
        local out = { files = #results, changed = 0, unchanged = 0, removed = 0, chunks = 0,
                      index = p.index }
        for _, r in ipairs(results) do
          if r.changed then out.changed = out.changed + 1 else out.unchanged = out.unchanged + 1 end
          out.chunks = out.chunks + r.chunks
        end
        -- Files of the manifest that no instance saw are gone from the folder.
        local seen = {}
        for _, r in ipairs(results) do seen[r.path] = true end
        local ingest = require "trellis.ingest"
        local idx <close> = open_index(p)
        for _, path in ipairs(idx:manifest_paths()) do
          if not seen[path] and ingest.matches(path, p.glob) then
            idx:delete_source(path)
            idx:manifest_del(path)
            out.removed = out.removed + 1
          end
        end
        out.docs = idx:count()
        out.vectors = idx:dim() > 0
        ctx.log(("%d files: %d changed, %d unchanged, %d removed; %d chunks written, %d in '%s'")
                :format(out.files, out.changed, out.unchanged, out.removed, out.chunks, out.docs,
                        p.index))
        return out
      end,
    },
  },
}
