#!/usr/bin/env bash
# Triggers (docs/feedback.md "Triggers") on the state backend under test: a
# feedback trigger fires at its crossing, not again within its cooldown, and
# again at the next crossing after it; a schedule trigger under an injected
# clock fires at its cron time, and once for slots missed; a `when` that
# loops forever or raises is disabled with its error while the scheduler
# keeps serving; bad declarations are refused with their codes and nothing
# of them is stored.
source "$(dirname "$0")/cluster.sh"
P="$SRC/tests/e2e/pipelines"
CLI="$BUILD/cli/trellis"
CLOCK="$TMP/clock"
utc() { "$PY" -c 'import calendar,sys,time; print(calendar.timegm(time.strptime(sys.argv[1], "%Y-%m-%dT%H:%M:%S")))' "$1"; }
set_clock() { echo "$1" >"$CLOCK.new"; mv "$CLOCK.new" "$CLOCK"; }
set_clock "$(utc 2026-12-06T00:00:00)"
export TRELLIS_TESTING_CLOCK_FILE="$CLOCK"
start_scheduler
start_worker a --slots 2
wait_workers 1

code_of() { # METHOD PATH BODY: "STATUS CODE"
  local out status
  out=$(curl -s -w '\n%{http_code}' -X "$1" -H 'Content-Type: application/json' \
    --data-binary "$3" "$API$2")
  status=${out##*$'\n'}
  echo "$status $(echo "${out%$'\n'*}" | json_get 'j.get("error", {}).get("code", "")' 2>/dev/null)"
}
register_body() { # FILE [SED-EXPR]
  "$PY" -c 'import json,re,sys
src = open(sys.argv[1]).read()
if len(sys.argv) > 2:
    a, b = sys.argv[2].split("|", 1)
    src = src.replace(a, b)
print(json.dumps({"source": src, "name": sys.argv[1].split("/")[-1]}))' "$@"
}
trig() { # PIPELINE NAME EXPR: EXPR over the trigger t
  api_get "/v1/triggers?pipeline=$1" | "$PY" -c 'import json,sys
j = json.load(sys.stdin)
t = [t for t in j["triggers"] if t["name"] == sys.argv[1]][0]
v = eval(sys.argv[2])
print(json.dumps(v) if not isinstance(v, str) else v)' "$2" "$3"
}
runs_by() { # TRIGGER: runs of e2e-retrain started by that trigger
  api_get "/v1/runs?limit=1000" | "$PY" -c 'import json,sys,urllib.request
j = json.load(sys.stdin)
n = 0
for r in j["runs"]:
    if r["pipeline"] != "e2e-retrain":
        continue
    full = json.load(urllib.request.urlopen(sys.argv[2] + "/v1/runs/" + r["run_id"]))
    n += (full.get("params") or {}).get("trigger", {}).get("name") == sys.argv[1]
print(n)' "$1" "$API"
}
wait_trig() { # PIPELINE NAME EXPR EXPECTED WHAT
  wait_for 60 bash -c "[ \"\$(curl -s '$API/v1/triggers?pipeline=$1' | $PY -c 'import json,sys
j = json.load(sys.stdin); t = [t for t in j[\"triggers\"] if t[\"name\"] == \"$2\"][0]; print(json.dumps($3))')\" = '$4' ]" \
    || fail "$5: $(api_get "/v1/triggers?pipeline=$1")"
  ok "$5"
}

# ---- bad input: codes, nothing stored ---------------------------------------
assert_eq "$(code_of POST /v1/pipelines "$(register_body "$P/trg_target.lua")" | cut -d' ' -f1)" 201 \
  "the target pipeline registers"
assert_eq "$(code_of POST /v1/pipelines "$(register_body "$P/trg_watched.lua" 'on = "feedback",|on = "feedbak",')")" \
  "400 invalid_trigger" "an unknown 'on' is refused"
assert_eq "$(code_of POST /v1/pipelines "$(register_body "$P/trg_watched.lua" 'cron = "0 3 * * *"|cron = "0 25 * * *"')")" \
  "400 invalid_cron" "a cron expression that does not parse is refused"
assert_eq "$(code_of POST /v1/pipelines "$(register_body "$P/trg_watched.lua" 'cron = "0 3 * * *"|cron = "0 3 * *"')")" \
  "400 invalid_cron" "a cron expression of four fields is refused"
assert_eq "$(code_of POST /v1/pipelines "$(register_body "$P/trg_watched.lua" 'run = "e2e-retrain", params|run = "no-such-pipeline", params')")" \
  "400 unknown_pipeline" "an unknown pipeline in 'run' is refused"
assert_eq "$(code_of POST /v1/pipelines "$(register_body "$P/trg_watched.lua" 'run = "e2e-retrain@1"|run = "e2e-retrain@9"')")" \
  "400 unknown_pipeline" "an unknown version in 'run' is refused"
assert_eq "$(code_of POST /v1/runs "$(register_body "$P/trg_watched.lua" 'run = "e2e-retrain", params|run = "nope", params')")" \
  "400 unknown_pipeline" "a submission is checked the same way"
assert_eq "$(api_get /v1/pipelines | json_get '[p["name"] for p in j["pipelines"] if p["name"] == "e2e-watched"]')" "[]" \
  "no refused pipeline was stored"
assert_eq "$(api_get /v1/triggers | json_get 'len(j["triggers"])')" 0 "nor any of its triggers"

# ---- registration -------------------------------------------------------------
assert_eq "$(code_of POST /v1/pipelines "$(register_body "$P/trg_watched.lua")" | cut -d' ' -f1)" 201 \
  "the watched pipeline registers"
out=$(api_get /v1/triggers)
assert_eq "$(echo "$out" | json_get '[t["name"] for t in j["triggers"]]')" \
  '["loops", "nightly", "raises", "worse"]' "GET /v1/triggers lists the declared triggers"
assert_eq "$(trig e2e-watched worse '[t["on"], t["run"], t["params"], t["cooldown"], t["state"], t["last_value"]]')" \
  '["feedback", "e2e-retrain", {"model": "reranker"}, 600.0, "armed", null]' "with declaration and state"
assert_eq "$(trig e2e-watched nightly 't["next_fire_at"]')" "2026-12-06T03:00:00.000Z" \
  "a schedule trigger shows its next cron time"

run_w() { local out; out=$(api_post /v1/runs '{"pipeline": "e2e-watched"}'); echo "$out" | json_get 'j["run_id"]'; }
w1=$(run_w)
wait_run "$w1" 60 >/dev/null
fb() { api_post /v1/feedback "{\"run_id\": \"$w1\", \"score\": $1}" | json_get 'j["feedback_id"]' >/dev/null; }

# ---- a `when` that loops forever is disabled; the scheduler keeps serving ----
fb 1
wait_trig e2e-watched worse 't["last_value"]' false "one thumb up: 'worse' is armed (false)"
t0=$(date +%s%N)
assert_eq "$(api_status "$API/healthz")" 200 "the scheduler answers while 'loops' runs"
wait_trig e2e-watched loops 't["state"]' '"disabled"' "a when that loops forever is disabled"
assert_contains "$(trig e2e-watched loops 't["error"]')" "limit" "its error names the limit it hit"

# ---- a crossing fires once ------------------------------------------------------
fb -1
fb -1   # window: 3, negative 2/3 > 0.5: crosses
wait_trig e2e-watched worse 't["firings"]' 1 "the crossing fires 'worse' once"
r1=$(trig e2e-watched worse 't["last_run_id"]')
out=$(wait_run "$r1" 60)
assert_eq "$(echo "$out" | json_get 'j["state"]')" succeeded "the triggered run ran"
assert_eq "$(echo "$out" | json_get '[j["params"]["model"], j["params"]["trigger"]["pipeline"], j["params"]["trigger"]["name"], j["params"]["trigger"]["stats"]["feedback"]["count"]]')" \
  '["reranker", "e2e-watched", "worse", 3]' "its params: the trigger's, plus trigger = {pipeline, name, stats}"
fb -1   # still true: no new crossing
assert_eq "$(trig e2e-watched worse 't["state"]')" cooling "within its cooldown it shows 'cooling'"

# ---- re-armed, crossed again within the cooldown: not fired -------------------
for _ in 1 2 3 4 5; do fb 5; done   # window 9, negative 3/9
wait_trig e2e-watched worse 't["last_value"]' false "enough good feedback re-arms it"
for _ in 1 2 3 4; do fb -1; done    # window 13, negative 7/13 > 0.5
wait_trig e2e-watched worse 't["suppressed"]' 1 "a crossing within the cooldown does not fire"
assert_eq "$(trig e2e-watched worse 't["firings"]')" 1 "still one firing"

# ---- after the cooldown, the next crossing fires again --------------------------
set_clock "$(utc 2026-12-06T00:11:00)"     # 660 s later, past the 600 s cooldown
for _ in 1 2 3 4 5 6 7 8; do fb 5; done   # window 21, negative 7/21
wait_trig e2e-watched worse 't["last_value"]' false "re-armed again"
for _ in $(seq 1 8); do fb -1; done        # window 29, negative 15/29: crosses at the 8th
wait_trig e2e-watched worse 't["firings"]' 2 "the next crossing after the cooldown fires again"
sleep 1
assert_eq "$(runs_by worse)" 2 "two runs of the target pipeline, one per firing"
out=$(api_get /v1/triggers/e2e-watched/worse/firings)
assert_eq "$(echo "$out" | json_get '[f["stats"]["feedback"]["count"] for f in j["firings"]]')" "[29, 3]" \
  "GET .../firings: newest first, with the statistics that caused each"
assert_eq "$(echo "$out" | json_get 'j["firings"][1]["run_id"]')" "$r1" "and the run each started"
assert_eq "$(echo "$out" | json_get 'j["firings"][0]["fired_at"]')" "2026-12-06T00:11:00.000Z" \
  "fired_at is the (injected) time of the firing"

# ---- a `when` that raises is disabled with its error ----------------------------
api_post /v1/labels '{"pipeline": "e2e-watched", "item": "x", "uncertainty": 0.5}' >/dev/null
wait_trig e2e-watched raises 't["state"]' '"disabled"' "a when that raises is disabled"
assert_contains "$(trig e2e-watched raises 't["error"]')" "no luck with e2e-watched" "its error is shown"

# ---- schedule with the injected clock ------------------------------------------
assert_eq "$(runs_by nightly)" 0 "the schedule trigger waits for its time"
set_clock "$(utc 2026-12-06T03:00:20)"
wait_trig e2e-watched nightly 't["firings"]' 1 "it fires at 03:00"
assert_eq "$(trig e2e-watched nightly 't["next_fire_at"]')" "2026-12-07T03:00:00.000Z" "next: tomorrow"
set_clock "$(utc 2026-12-09T04:00:00)"     # three slots missed
wait_trig e2e-watched nightly 't["firings"]' 2 "missed slots fire once, not once each"
sleep 1
assert_eq "$(trig e2e-watched nightly 't["firings"]')" 2 "still once"
assert_eq "$(trig e2e-watched nightly 't["next_fire_at"]')" "2026-12-10T03:00:00.000Z" "then the next slot"
assert_eq "$(runs_by nightly)" 2 "each firing started a run"

# ---- durable: a restart keeps states and firings ----------------------------------
kill -9 "$SCHED_PID"; wait "$SCHED_PID" 2>/dev/null || true
start_scheduler
assert_eq "$(trig e2e-watched worse '[t["firings"], t["last_value"], t["suppressed"]]')" "[2, true, 1]" \
  "after kill -9 and a restart the trigger's state is as it was"
assert_eq "$(trig e2e-watched loops 't["state"]')" disabled "a disabled trigger stays disabled"
sleep 1
assert_eq "$(runs_by worse)" 2 "and the restart fired nothing again"
out=$("$CLI" --api "$API" triggers)
assert_contains "$out" "worse" "trellis triggers lists them"
assert_contains "$out" "disabled" "with their state"
out=$("$CLI" --api "$API" triggers firings e2e-watched worse)
assert_contains "$out" "$r1" "trellis triggers firings shows the runs"
