#!/usr/bin/env bash
# Pool names reach /metrics as label values: a hostile name is refused where
# it comes in (a pipeline's task, a worker's HELLO), the exposition stays
# well-formed, and pools that nothing refers to any more are freed, so
# /metrics shrinks back once the runs that named them end.
source "$(dirname "$0")/cluster.sh"
P="$SRC/tests/e2e/pipelines"
start_scheduler
start_worker a --pool cpu --slots 2
wait_workers 1

# A well-formed exposition: promtool when installed, else the grammar here.
check_metrics() {
  api_get /metrics >"$TMP/metrics.txt"
  if command -v promtool >/dev/null; then
    promtool check metrics <"$TMP/metrics.txt" 2>&1 | grep -iv "lint\|help\|counter" | grep -qi "error" \
      && fail "promtool: $(promtool check metrics <"$TMP/metrics.txt" 2>&1 | head -3)"
  fi
  "$PY" - "$TMP/metrics.txt" <<'PYEOF' || fail "/metrics is not well-formed"
import re, sys
lab = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
sample = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{' + lab + r'(,' + lab + r')*\})? [-+0-9.eE]+(Inf)?$')
for line in open(sys.argv[1]).read().split("\n")[:-1]:
    if line.startswith("# HELP ") or line.startswith("# TYPE "):
        continue
    assert sample.match(line), line
    assert not line.startswith("api_injected"), line
PYEOF
}

cat >"$TMP/hostile.lua" <<'LUA'
local trellis = require "trellis"
return trellis.pipeline { name = "hostile", version = "1", tasks = {
  trellis.task { name = "t", pool = "p\"} 7\napi_injected 1\n#", run = function() return 1 end },
} }
LUA
body=$("$PY" -c 'import json,sys; print(json.dumps({"source": open(sys.argv[1]).read(), "name": "hostile.lua"}))' "$TMP/hostile.lua")
out=$(curl -s -w '\n%{http_code}' -X POST --data-binary "$body" "$API/v1/runs")
assert_eq "$(echo "$out" | tail -n 1)" 400 "a task in a hostile pool is refused at submit"
assert_contains "$(echo "$out" | head -n 1)" "A-Z a-z 0-9 _ . -" "the error says what a pool name may hold"
out=$("$BUILD/tests/zmq_impostor" "tcp://127.0.0.1:$WPORT" hello w-evil "$(printf 'p"} 7\napi_injected 1\n#')")
assert_contains "$out" "bye: invalid pool name" "a HELLO with a hostile pool is refused"
if "$WORKER_BIN" --scheduler "tcp://127.0.0.1:$WPORT" --pool 'a"b' >/dev/null 2>&1; then
  fail "the worker accepted a hostile --pool"
fi
check_metrics
ok "/metrics stays well-formed"

# 300 pools named by a run: they show while it is active and go once it ends.
"$PY" - "$TMP/wide.lua" <<'PYEOF'
import sys
tasks = ",\n".join('  trellis.task { name = "t%d", pool = "pool-%d", run = function() return 1 end }' % (i, i) for i in range(300))
open(sys.argv[1], "w").write('local trellis = require "trellis"\nreturn trellis.pipeline { name = "wide", version = "1", tasks = {\n' + tasks + "\n} }\n")
PYEOF
base=$(api_get /metrics | wc -c)
for i in 1 2 3; do
  id=$(submit "$TMP/wide.lua")
  wait_for 10 bash -c "curl -s $API/metrics | grep -q 'trellis_ready_tasks{pool=\"pool-299\"} $i'" \
    || fail "the run's pools do not show"
done
ok "the pools of active runs show in /metrics"
check_metrics
for r in $(api_get '/v1/runs?limit=10' | json_get '" ".join(x["run_id"] for x in j["runs"] if x["state"] in ("queued", "running"))'); do
  assert_eq "$(api_status -X POST "$API/v1/runs/$r/cancel")" 200 "cancel $r"
done
wait_for 10 bash -c "! curl -s $API/metrics | grep -q 'pool=\"pool-'" || fail "the pools of ended runs stay in /metrics"
# A pipeline's own series (trellis_pipeline_runs_total{pipeline="wide"}, ...) are
# counters and stay, bounded by the pipeline cap (docs/observability.md).
after=$(api_get /metrics | grep -v 'pipeline="wide"' | wc -c)
[ "$after" -le "$((base + 100))" ] || fail "/metrics did not shrink back: $base bytes before, $after after"
ok "/metrics shrinks back once the runs end ($after bytes, $base before)"
id=$(submit "$P/diamond.lua" '{"x": 2}')
assert_eq "$(wait_run "$id" | json_get 'j["output"]["d"]')" 9 "the cpu pool still works"
assert_contains "$(api_get /metrics)" 'trellis_workers{pool="cpu"} 1' "the worker's pool stays"
echo "1 passed, 0 failed"
