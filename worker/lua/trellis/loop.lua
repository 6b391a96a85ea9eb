-- trellis.feedback and trellis.registry in tasks (the Lua half of
-- worker/lua_loop.c). `native.call(op, args)` asks the scheduler and yields
-- until it answers: the status and body of the HTTP API call the op stands
-- for (docs/feedback.md). Writes come back once durable.
local native = ...
local call = native.call

local feedback, registry = {}, {}

-- The API's answer, or an error naming the call and the API's error code.
local function check(what, status, body)
  if status >= 200 and status < 300 then return body end
  local e = type(body) == "table" and type(body.error) == "table" and body.error or {}
  error(("%s: %s (%s%s)"):format(what, tostring(e.message or "failed"), tostring(status),
        e.code and (" " .. tostring(e.code)) or ""), 3)
end

local function finite(x) return type(x) == "number" and x == x and x ~= math.huge
                                and x ~= -math.huge end

-- trellis.feedback.request_label { item = V, uncertainty = X } -> item_id
-- Queues V (any value msgpack can carry) for a person to label; the
-- scheduler adds this task's pipeline, run id and task name.
function feedback.request_label(t)
  if type(t) ~= "table" or t.item == nil then
    error("trellis.feedback.request_label { item = V, uncertainty = X }: 'item' is required", 2)
  end
  if not finite(t.uncertainty) then
    error("trellis.feedback.request_label: 'uncertainty' must be a finite number", 2)
  end
  local status, body = call("label", { item = t.item, uncertainty = t.uncertainty })
  return check("trellis.feedback.request_label", status, body).item_id
end

-- trellis.feedback.list { pipeline = P, limit = N } -> GET /v1/feedback's items
-- trellis.feedback.labels { pipeline = P, state = "labelled", limit = N } -> GET /v1/labels's
-- trellis.feedback.run(run_id) -> GET /v1/runs/{id} (the rated run: its output)
-- Reads for a task that builds a training set itself (a triggered retraining run).
function feedback.list(t)
  if type(t) ~= "table" or type(t.pipeline) ~= "string" then
    error("trellis.feedback.list { pipeline = P, limit = N }: 'pipeline' is required", 2)
  end
  local status, body = call("feedback.list", { pipeline = t.pipeline, limit = t.limit })
  return check("trellis.feedback.list", status, body).feedback
end

function feedback.labels(t)
  if type(t) ~= "table" or type(t.pipeline) ~= "string" then
    error("trellis.feedback.labels { pipeline = P, state = S, limit = N }: "
          .. "'pipeline' is required", 2)
  end
  local status, body = call("labels.list", { pipeline = t.pipeline, state = t.state,
                                             limit = t.limit })
  return check("trellis.feedback.labels", status, body).items
end

function feedback.run(run_id)
  if type(run_id) ~= "string" then error("trellis.feedback.run(run_id): a run id expected", 2) end
  local status, body = call("run.get", { run_id = run_id })
  if status == 404 then return nil end
  return check("trellis.feedback.run", status, body)
end

-- trellis.registry.get("reranker@production") or get("reranker@3")
-- -> {name, version, artifact, metrics, lineage, tags, aliases, ...} or nil
function registry.get(ref)
  if type(ref) ~= "string" then
    error("trellis.registry.get: \"name@alias\" or \"name@version\" expected", 2)
  end
  local status, body = call("registry.get", { ref = ref })
  if status == 404 then return nil end
  return check("trellis.registry.get", status, body)
end

-- trellis.registry.register { name, artifact, metrics, lineage, tags } -> version
-- lineage.run_id and lineage.pipeline default to this task's run and pipeline.
function registry.register(t)
  if type(t) ~= "table" or type(t.name) ~= "string" or t.artifact == nil then
    error("trellis.registry.register { name = ..., artifact = ..., metrics, lineage, tags }: "
          .. "'name' and 'artifact' are required", 2)
  end
  local status, body = call("registry.register", {
    name = t.name, artifact = t.artifact, metrics = t.metrics, lineage = t.lineage,
    tags = t.tags,
  })
  return check("trellis.registry.register", status, body).version
end

-- trellis.registry.promote { name, alias, version, reason } -> {name, alias, version, from}
function registry.promote(t)
  if type(t) ~= "table" or type(t.name) ~= "string" or type(t.alias) ~= "string"
     or math.tointeger(t.version) == nil then
    error("trellis.registry.promote { name, alias, version, reason }: name, alias and an "
          .. "integer version are required", 2)
  end
  local status, body = call("registry.promote", {
    name = t.name, alias = t.alias, version = math.tointeger(t.version), reason = t.reason,
  })
  return check("trellis.registry.promote", status, body)
end

-- The promotion gate (docs/feedback.md, "The promotion gate"):
-- trellis.registry.gate { name, challenger = v, champion_alias = "production",
--   metric = "mrr", margin = 0.01, lower_is_better = false, baseline = nil,
--   evaluate = function(version_record) return score or {metric = score, ...} end }
-- Evaluates the challenger and the champion with the same function (so on
-- the same held-out data) and moves the alias to the challenger only when
-- its score beats the champion's by the margin, or when there is no
-- champion: then it must beat `baseline` (the score of running without a
-- model, a number or a metrics table) by the margin when one is given, and
-- is promoted when none is. Both scores go into the alias move's reason. Returns
-- {promoted, reason, challenger = {version, score}, champion = {version, score} or nil}.
local function score_of(what, v, metric)
  local s = v
  if type(v) == "table" then s = v[metric] end
  if not finite(s) then
    error(("trellis.registry.gate: evaluate(%s) gave no finite '%s'"):format(what, metric), 3)
  end
  return s
end

function registry.gate(t)
  if type(t) ~= "table" or type(t.name) ~= "string" or math.tointeger(t.challenger) == nil
     or type(t.evaluate) ~= "function" then
    error("trellis.registry.gate { name, challenger = version, evaluate = function(v) ... end, "
          .. "champion_alias = 'production', metric = 'score', margin = 0 }", 2)
  end
  local alias = t.champion_alias or "production"
  local metric = t.metric or "score"
  local margin = t.margin or 0
  if not finite(margin) or margin < 0 then
    error("trellis.registry.gate: 'margin' must be a number >= 0", 2)
  end
  local cv = math.tointeger(t.challenger)
  local challenger = registry.get(("%s@%d"):format(t.name, cv))
  if challenger == nil then
    error(("trellis.registry.gate: no version %d of model '%s'"):format(cv, t.name), 2)
  end
  local champion = registry.get(("%s@%s"):format(t.name, alias))
  local out = { challenger = { version = cv } }
  if champion ~= nil and champion.version == cv then
    out.promoted = false
    out.champion = { version = cv }
    out.reason = ("gate: v%d already is %s"):format(cv, alias)
    return out
  end
  local cs = score_of("challenger v" .. cv, t.evaluate(challenger), metric)
  out.challenger.score = cs
  local fmt = "%.4f"
  if champion == nil and t.baseline == nil then
    out.promoted = true
    out.reason = ("gate: %s challenger v%d " .. fmt .. ", no champion at '%s'")
                 :format(metric, cv, cs, alias)
  elseif champion == nil then
    -- No champion, but what runs without a model: beat that, by the margin.
    local bs = score_of("baseline", t.baseline, metric)
    out.baseline = { score = bs }
    local better
    if t.lower_is_better then better = cs <= bs - margin else better = cs >= bs + margin end
    out.promoted = better
    out.reason = ("gate: %s challenger v%d " .. fmt .. " vs no model " .. fmt
                  .. " (no champion at '%s'; margin %g%s): %s"):format(metric, cv, cs, bs, alias,
                  margin, t.lower_is_better and ", lower is better" or "",
                  better and "promoted" or "not promoted")
  else
    local hs = score_of("champion v" .. champion.version, t.evaluate(champion), metric)
    out.champion = { version = champion.version, score = hs }
    local better
    if t.lower_is_better then better = cs <= hs - margin else better = cs >= hs + margin end
    out.promoted = better
    out.reason = ("gate: %s challenger v%d " .. fmt .. " vs champion v%d " .. fmt
                  .. " (margin %g%s): %s"):format(metric, cv, cs, champion.version, hs, margin,
                  t.lower_is_better and ", lower is better" or "",
                  better and "promoted" or "kept the champion")
  end
  if out.promoted then
    registry.promote { name = t.name, alias = alias, version = cv, reason = out.reason }
  end
  return out
end

return { feedback = feedback, registry = registry }
