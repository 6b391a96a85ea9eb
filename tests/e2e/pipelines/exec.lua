-- trellis.exec cases, one per run, chosen by params.case; params.dir is a
-- scratch folder for pid files.
local trellis = require "trellis"
local cases = {}

function cases.basic(ctx)
  return trellis.exec { argv = { "sh", "-c", "echo hello; echo line2; echo oops >&2; exit 3" } }
end

function cases.io(ctx)
  return trellis.exec { argv = { "sh", "-c", 'cat; echo "FOO=$FOO"; pwd' }, stdin = "from stdin\n",
                        env = { FOO = "bar" }, cwd = ctx.params.dir }
end

function cases.cuda(ctx)
  local r = trellis.exec { argv = { "sh", "-c", 'printf "%s|%s" "$CUDA_VISIBLE_DEVICES" "$CUDA_DEVICE_ORDER"' } }
  local want = table.concat(ctx.gpus, ",")
  return { got = r.stdout, want = want }
end

function cases.bounded(ctx)
  local small = trellis.exec { argv = { "sh", "-c", "head -c 5000 /dev/zero | tr '\\0' x" },
                               max_output = 1000 }
  local big = trellis.exec { argv = { "sh", "-c", "head -c 3000000 /dev/zero" } }
  return { small = #small.stdout, small_dropped = small.stdout_dropped,
           big = #big.stdout, big_dropped = big.stdout_dropped }
end

-- A child and a grandchild that ignore nothing; the timeout ends both.
function cases.timeout(ctx)
  local d = ctx.params.dir
  local t0 = trellis.now()
  local r = trellis.exec { argv = { "sh", "-c",
    "sleep 300 & echo $! > " .. d .. "/grandchild; echo $$ > " .. d .. "/child; wait" },
    timeout = 0.5, grace = 1 }
  return { timed_out = r.timed_out, signal = r.signal, status = r.status,
           seconds = trellis.now() - t0 }
end

-- The same without a timeout: the run is cancelled from outside.
function cases.cancel(ctx)
  local d = ctx.params.dir
  trellis.exec { argv = { "sh", "-c",
    "trap '' TERM; sleep 300 & echo $! > " .. d .. "/grandchild; echo $$ > " .. d .. "/child; wait" },
    grace = 0.5 }
  return "not reached"
end

function cases.missing(ctx)
  return trellis.exec { argv = { "/no/such/program" } }
end

return trellis.pipeline {
  name = "e2e-exec", version = "1",
  params = { case = "basic", dir = "/tmp" },
  tasks = {
    trellis.task { name = "main", run = function(ctx) return cases[ctx.params.case](ctx) end },
    trellis.task { name = "gpu", pool = "gpu", gpus = 1, run = function(ctx)
      if ctx.params.case ~= "cuda" then return nil end
      return cases.cuda(ctx)
    end },
  },
}
