#!/usr/bin/env bash
# Exactly once on etcd with two schedulers: the leader is killed with kill -9
# right after it answered the feedback that crosses a trigger's threshold,
# twice (each scheduler once); whichever scheduler leads next fires what the
# dead one had not made durable, and nothing it had. The triggered
# pipeline's runs are counted: exactly one per crossing.
TR_E2E_STATE=etcd
source "$(dirname "$0")/cluster.sh"
P="$SRC/tests/e2e/pipelines"
TTL=2
start_state

declare -A SAPI SWPORT SPID
for n in s1 s2; do SAPI[$n]=$(free_port); SWPORT[$n]=$(free_port); done
start_sched() {
  local n="$1"
  "$SCHED_BIN" --id "$n" --api "127.0.0.1:${SAPI[$n]}" --listen "tcp://127.0.0.1:${SWPORT[$n]}" \
    --state "$STATE_URL" --heartbeat-ms "$HB_MS" --leader-ttl "$TTL" >>"$TMP/scheduler-$n.log" 2>&1 &
  SPID[$n]=$!
  PIDS+=("${SPID[$n]}")
  wait_for 20 curl -sf "http://127.0.0.1:${SAPI[$n]}/healthz" || fail "scheduler $n did not answer"
}
ready() { [ "$(api_status "http://127.0.0.1:${SAPI[$1]}/readyz")" = 200 ]; }
use() { API="http://127.0.0.1:${SAPI[$1]}"; }

start_sched s1
wait_for 20 ready s1 || fail "s1 did not lead"
start_sched s2
EPS="tcp://127.0.0.1:${SWPORT[s1]},tcp://127.0.0.1:${SWPORT[s2]}"
"$WORKER_BIN" --scheduler "$EPS" --id w-a --slots 4 --heartbeat-ms "$HB_MS" >>"$TMP/worker-a.log" 2>&1 &
PIDS+=("$!")
use s1
wait_workers 1

register() {
  local body
  body=$("$PY" -c 'import json,sys; print(json.dumps({"source": open(sys.argv[1]).read(), "name": sys.argv[1]}))' "$1")
  api_post /v1/pipelines "$body" | json_get 'j["name"]' >/dev/null || fail "cannot register $1"
}
register "$P/trg_target.lua"
register "$P/trg_ha.lua"
w=$(api_post /v1/runs '{"pipeline": "e2e-ha-watched"}' | json_get 'j["run_id"]')
wait_run "$w" 60 >/dev/null
fb() { # SCORE: prints the HTTP status of the post
  curl -s -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
    --data-binary "{\"run_id\": \"$w\", \"score\": $1}" "$API/v1/feedback"
}
trig() { curl -s "$API/v1/triggers?pipeline=e2e-ha-watched" | json_get "$1"; }
retrain_runs() {
  curl -s "$API/v1/runs?limit=1000" | json_get 'len([r for r in j["runs"] if r["pipeline"] == "e2e-retrain"])'
}
# crossing LEADER STANDBY ROUND: kills LEADER right after the crossing feedback's answer.
crossing() {
  local lead="$1" next="$2" round="$3"
  assert_eq "$(fb -1)" 201 "round $round: the crossing feedback is answered"
  kill -9 "${SPID[$lead]}"
  ok "round $round: killed the leader $lead right after that answer"
  wait_for 30 ready "$next" || fail "round $round: $next did not take over"
  use "$next"
  wait_for 60 bash -c "[ \"\$(curl -s '$API/v1/triggers?pipeline=e2e-ha-watched' | $PY -c 'import json,sys; print(json.load(sys.stdin)[\"triggers\"][0][\"firings\"])')\" = $round ]" \
    || fail "round $round: the trigger did not fire: $(curl -s "$API/v1/triggers")"
  ok "round $round: $next shows the firing"
  sleep 2  # anything that would fire twice has had time to
  assert_eq "$(retrain_runs)" "$round" "round $round: exactly $round run(s) of the triggered pipeline"
  assert_eq "$(curl -s "$API/v1/triggers/e2e-ha-watched/worse/firings" | json_get 'len(j["firings"])')" \
    "$round" "round $round: exactly $round firing record(s)"
  start_sched "$lead"
}

# Round 1: s1 leads; two negatives (count 2: false), the third crosses.
assert_eq "$(fb -1)" 201 "negative feedback"
assert_eq "$(fb -1)" 201 "negative feedback"
wait_for 30 bash -c "[ \"\$(curl -s '$API/v1/triggers?pipeline=e2e-ha-watched' | $PY -c 'import json,sys; print(json.load(sys.stdin)[\"triggers\"][0][\"last_value\"])')\" = False ]" \
  || fail "the trigger was not evaluated false"
ok "below the threshold the trigger is armed"
crossing s1 s2 1

# Round 2: s2 leads; re-armed by good feedback (6: 3/6 negative), one more crosses (4/7).
for _ in 1 2 3; do assert_eq "$(fb 1)" 201 "positive feedback"; done
wait_for 30 bash -c "[ \"\$(curl -s '$API/v1/triggers?pipeline=e2e-ha-watched' | $PY -c 'import json,sys; print(json.load(sys.stdin)[\"triggers\"][0][\"last_value\"])')\" = False ]" \
  || fail "the trigger was not re-armed: $(curl -s "$API/v1/triggers")"
ok "re-armed under the new leader"
crossing s2 s1 2
id=$(curl -s "$API/v1/triggers?pipeline=e2e-ha-watched" | json_get 'j["triggers"][0]["last_run_id"]')
out=$(wait_run "$id" 60)
assert_eq "$(echo "$out" | json_get 'j["state"]')" succeeded "the last triggered run ran to the end"
echo "1 passed, 0 failed"
