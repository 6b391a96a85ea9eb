-- batch_embed.lua: batch inference on the gpu pool, the way a real job runs
-- one: the input is cut into shards, one task per shard asks for one GPU and
-- runs a worker-side program with trellis.exec (CUDA_VISIBLE_DEVICES names
-- the device the scheduler gave it), and a last task merges the shards'
-- outputs and reports.
--
--   trellis dev --gpus-per-worker 1 --run lua-pipelines/batch_embed.lua \
--     -p input=$PWD/lua-pipelines/data/questions.jsonl -p out_dir=/tmp/embed
--
-- The program is `script` when given (a file on the workers, e.g. baked into
-- the image), else the small Python embedder below, passed with python3 -c.
-- It uses CUDA through PyTorch when a device is visible and torch is
-- installed, and a deterministic hashing embedder on the CPU otherwise, so
-- the pipeline runs on a machine without a GPU (docs/gpus.md).
local trellis = require "trellis"

local EMBEDDER = [[
import hashlib, json, math, os, sys, time
inp, shard, shards, out, dim = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
device = "cpu"
if visible:
    try:
        import torch
        if torch.cuda.is_available():
            device = "cuda"
    except Exception:
        pass
print("shard %d/%d: CUDA_VISIBLE_DEVICES=%r, running on %s" % (shard, shards, visible, device), flush=True)

def embed(text):
    # The hashing trick: stable across runs and machines, no model to download.
    v = [0.0] * dim
    for tok in text.lower().split():
        h = int.from_bytes(hashlib.sha256(tok.encode()).digest()[:8], "big")
        v[h % dim] += 1.0 if (h >> 63) else -1.0
    n = math.sqrt(sum(x * x for x in v)) or 1.0
    return [round(x / n, 6) for x in v]

t0, count = time.time(), 0
with open(inp) as f, open(out + ".tmp", "w") as o:
    for i, line in enumerate(f):
        if i % shards != shard - 1 or not line.strip():
            continue
        try:
            rec = json.loads(line)
            text = rec.get("text") or rec.get("question") or json.dumps(rec)
        except ValueError:
            rec, text = None, line.strip()
        o.write(json.dumps({"line": i + 1, "vector": embed(text)}) + "\n")
        count += 1
        if count % 100 == 0:
            print("shard %d: %d done" % (shard, count), flush=True)
os.replace(out + ".tmp", out)
print("RESULT count=%d dim=%d device=%s seconds=%.3f" % (count, dim, device, time.time() - t0))
]]

return trellis.pipeline {
  name = "batch-embed", version = "1",
  params = {
    input = "lua-pipelines/data/questions.jsonl", -- JSON lines ("text" or "question") or plain text
    out_dir = "/tmp/trellis-batch-embed",
    shards = 4,
    dim = 64,
    python = "python3",
    script = "",          -- a program on the workers; "" = the embedded one
    timeout = 3600,       -- seconds per shard
  },
  tasks = {
    trellis.task { name = "plan", run = function(ctx)
      local r = trellis.exec { argv = { "mkdir", "-p", ctx.params.out_dir } }
      if r.status ~= 0 then error("cannot create " .. ctx.params.out_dir .. ": " .. r.stderr) end
      local shards = {}
      for i = 1, ctx.params.shards do shards[i] = i end
      return shards
    end },

    trellis.task { name = "embed", map = "plan", pool = "gpu", gpus = 1, retries = 1,
      run = function(ctx, shard)
        local p = ctx.params
        local out = string.format("%s/shard-%03d.jsonl", p.out_dir, shard)
        local argv = { p.python }
        if p.script ~= "" then argv[#argv + 1] = p.script
        else argv[#argv + 1] = "-c"; argv[#argv + 1] = EMBEDDER end
        for _, a in ipairs { p.input, tostring(shard), tostring(p.shards), out, tostring(p.dim) } do
          argv[#argv + 1] = a
        end
        local r = trellis.exec { argv = argv, timeout = p.timeout,
                                 env = { PYTHONUNBUFFERED = "1" } }
        if r.status ~= 0 then
          error(string.format("shard %d: exit %d%s: %s", shard, r.status,
                              r.timed_out and " (timed out)" or "", r.stderr))
        end
        local count, dim, device = r.stdout:match("RESULT count=(%d+) dim=(%d+) device=(%w+)")
        if not count then error("shard " .. shard .. ": no RESULT line in: " .. r.stdout) end
        return { shard = shard, path = out, count = tonumber(count), dim = tonumber(dim),
                 device = device, gpus = ctx.gpus }
      end },

    trellis.task { name = "collect", after = { "embed" }, run = function(ctx, shards)
      local paths, total, devices = {}, 0, {}
      for _, s in ipairs(shards) do
        paths[#paths + 1] = s.path
        total = total + s.count
        devices[s.device] = (devices[s.device] or 0) + 1
      end
      local merged = ctx.params.out_dir .. "/embeddings.jsonl"
      local argv = { "sh", "-c", 'out="$1"; shift; cat "$@" > "$out.tmp" && mv "$out.tmp" "$out"',
                     "merge", merged }
      for _, p in ipairs(paths) do argv[#argv + 1] = p end
      local r = trellis.exec { argv = argv }
      if r.status ~= 0 then error("merge failed: " .. r.stderr) end
      return { vectors = total, shards = #shards, dim = shards[1] and shards[1].dim or 0,
               devices = devices, output = merged }
    end },
  },
}
