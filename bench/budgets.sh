#!/usr/bin/env bash
# bench/budgets.sh - what LLM budget reservations cost (docs/budgets.md).
#
# One scheduler, one worker with --slots S, tests/llm/fake_llm.py as the
# provider. Three runs of N tasks, one llm.chat each (bench/budget_calls.lua):
#   base     no call at all (the tasks' own cost)
#   refused  a tenant budget of 1 token: every call is refused at its
#            reservation (one round trip, batched), none reaches the provider
#   served   no limit: reserve, call the fake provider, settle; each task
#            reports its reservation's round trip (budget_ms)
# Prints reservations/s and the added latency per call.
#
# Usage: bench/budgets.sh [N] [SLOTS]   (defaults 20000 and 1000)
# Environment: BUILD_DIR (default <repo>/build).
set -u
N="${1:-20000}"
SLOTS="${2:-1000}"
HERE="$(cd "$(dirname "$0")" && pwd)"
export TR_SOURCE_DIR="$(cd "$HERE/.." && pwd)"
export TR_BUILD_DIR="${BUILD_DIR:-$TR_SOURCE_DIR/build}"
source "$TR_SOURCE_DIR/tests/e2e/cluster.sh"

"$PY" "$SRC/tests/llm/fake_llm.py" >"$TMP/fake.port" 2>"$TMP/fake.log" &
PIDS+=("$!")
wait_for 10 test -s "$TMP/fake.port" || fail "fake LLM server did not start"
FPORT=$(head -n1 "$TMP/fake.port")
cat >"$TMP/providers.json" <<JSON
{"fake": {"kind": "openai", "base_url": "http://127.0.0.1:$FPORT/v1", "default": true}}
JSON
start_scheduler
start_worker w1 --slots "$SLOTS" --providers "$TMP/providers.json"
wait_workers 1

timed_run() { # label n params-json
  local id run
  id=$(submit "$HERE/budget_calls.lua" "$3")
  run=$(wait_run "$id" 600)
  api_get "/v1/runs/$id/tasks" >"$TMP/$1.json"
  echo "$run" >"$TMP/$1.run"
}
curl -s -X PUT -H 'Content-Type: application/json' --data-binary '{"tokens": 1}' \
  "$API/v1/budgets/default" >/dev/null
timed_run base "$N" "{\"n\": $N, \"skip\": true}"
timed_run refused "$N" "{\"n\": $N}"
M=$(( N < 2000 ? N : 2000 ))
curl -s -X PUT -H 'Content-Type: application/json' --data-binary '{"tokens": null}' \
  "$API/v1/budgets/default" >/dev/null
timed_run served "$M" "{\"n\": $M}"
"$PY" - "$TMP" "$N" "$M" "$SLOTS" <<'PY'
import json, sys, datetime
tmp, n, m, slots = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
def t(s): return datetime.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
def load(k):
    run = json.load(open("%s/%s.run" % (tmp, k)))
    tasks = [x for x in json.load(open("%s/%s.json" % (tmp, k)))["tasks"] if x["name"] == "ask"]
    # the map's span: first start to last finish of the ask tasks
    span = max(t(x["finished_at"]) for x in tasks) - min(t(x["started_at"]) for x in tasks)
    return run, tasks, span
q = lambda a, p: a[min(len(a) - 1, int(p * len(a)))]
_, bt, bspan = load("base")
_, rt, rspan = load("refused")
_, st, sspan = load("served")
assert all(x["output"]["code"] == "budget_exceeded" for x in rt), "a call was not refused"
rms = sorted(x["output"]["call_ms"] for x in rt)
ok = [x["output"] for x in st if x["output"]["code"] == "ok"]
bm = sorted(o["budget_ms"] for o in ok)
lat = sorted(o["latency_ms"] for o in ok)
print("slots %s" % slots)
print("base    (no call)         %6d tasks in %.3f s: %8.0f tasks/s" % (n, bspan, n / bspan))
print("refused (one reservation) %6d calls in %.3f s: %8.0f reservations/s, +%.1f us per call; "
      "a refused call takes p50 %.2f ms p99 %.2f ms"
      % (n, rspan, n / rspan, (rspan - bspan) / n * 1e6, q(rms, .5), q(rms, .99)))
print("served  %6d calls in %.3f s; reservation round trip p50 %.2f ms p99 %.2f ms "
      "(the call: p50 %.2f ms)" % (len(ok), sspan, q(bm, .5), q(bm, .99), q(lat, .5)))
PY
