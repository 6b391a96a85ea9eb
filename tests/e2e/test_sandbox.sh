#!/usr/bin/env bash
# Pipeline files are read in sandbox processes that are killed at the
# wall-clock limit (scheduler/sandbox.c):
# - five files whose top level runs a backtracking pattern (one C call no
#   instruction hook stops) submitted at once are each answered
#   400 limit_exceeded within the limit plus a margin, while ordinary
#   submissions sent meanwhile are answered (their latency is printed);
# - the scheduler serves afterwards, reaps every child it killed (no zombie)
#   and leaves no child behind when it stops;
# - recovery reads stored pipelines through the same sandbox: a run whose
#   stored source became hostile fails with the limit's message, while the
#   restarted scheduler serves new runs at once.
source "$(dirname "$0")/cluster.sh"
P="$SRC/tests/e2e/pipelines"
WALL=10    # the default wall-clock limit of a pipeline file (tr_pipeline_default_limits)
MARGIN=6   # the kill comes 0.5 s after the limit; the rest is for a busy machine

hostile() { # N -> a pipeline file that never finishes its top level
  printf -- '-- hostile %s\nlocal trellis = require "trellis"\n' "$1"
  printf 'string.find(string.rep("a", 3000), ".-.-.-.-b")\n'
  printf 'return trellis.pipeline { name = "h", tasks = { trellis.task { name = "a", run = function() end } } }\n'
}
body_of() { # file name -> JSON body of POST /v1/runs
  "$PY" -c 'import json,sys; print(json.dumps({"source": open(sys.argv[1]).read(), "name": sys.argv[2]}))' "$1" "$2"
}
# children STATE: pids of the scheduler's children ("" = any state, Z = zombies)
children() {
  local want="$1" p st
  for p in $(pgrep -P "$SCHED_PID" || true); do
    st=$(awk '{print $3}' "/proc/$p/stat" 2>/dev/null || true)
    [ -z "$want" ] || [ "$st" = "$want" ] && echo "$p"
  done
  return 0
}

start_scheduler
start_worker a --slots 4
wait_workers 1
wait_for 10 bash -c "[ -n \"\$(pgrep -P $SCHED_PID)\" ]" || fail "no warm sandbox child"
ok "warm sandbox children: $(children '' | wc -l)"

for i in 1 2 3 4 5; do
  hostile "$i" >"$TMP/hostile$i.lua"
  body_of "$TMP/hostile$i.lua" "hostile$i.lua" >"$TMP/hostile$i.json"
done
hpids=()
for i in 1 2 3 4 5; do
  curl -s -o "$TMP/hresp$i" -w '%{http_code} %{time_total}' -X POST \
    --data-binary @"$TMP/hostile$i.json" "$API/v1/runs" >"$TMP/hstat$i" &
  hpids+=("$!")
done
sleep 0.5

# Ordinary submissions meanwhile, each a distinct file so that each is read
# by a sandbox (the cache of graphs is by digest).
lat=()
for k in $(seq 1 8); do
  { echo "-- ordinary $k"; cat "$P/diamond.lua"; } >"$TMP/ord$k.lua"
  body_of "$TMP/ord$k.lua" "ord$k.lua" >"$TMP/ord$k.json"
  res=$(curl -s -o "$TMP/oresp$k" -w '%{http_code} %{time_total}' -X POST \
    --data-binary @"$TMP/ord$k.json" "$API/v1/runs")
  code=${res%% *}; t=${res##* }
  [ "$code" = 201 ] || fail "ordinary submission $k got $code: $(cat "$TMP/oresp$k")"
  lat+=("$t")
  "$PY" -c 'import sys; sys.exit(0 if float(sys.argv[1]) < 2.0 else 1)' "$t" \
    || fail "ordinary submission $k took ${t}s while hostile files were being read"
  sleep 0.5
done
ok "8 ordinary submissions answered 201 during the hostile ones; latency (s): ${lat[*]}"
busy=$(children '' | wc -l)
ok "sandbox children while five hostile files are read: $busy"

wait "${hpids[@]}"
for i in 1 2 3 4 5; do
  read -r code t <"$TMP/hstat$i" || true
  assert_eq "$code" 400 "hostile file $i is a 400"
  assert_eq "$(json_get 'j["error"]["code"]' <"$TMP/hresp$i")" limit_exceeded "hostile file $i: limit_exceeded"
  assert_contains "$(json_get 'j["error"]["message"]' <"$TMP/hresp$i")" "time limit of $WALL s exceeded" \
    "hostile file $i: the message names the limit"
  "$PY" -c 'import sys; sys.exit(0 if float(sys.argv[1]) < float(sys.argv[2]) else 1)' "$t" \
    "$((WALL + MARGIN))" || fail "hostile file $i answered after ${t}s"
  ok "hostile file $i answered after ${t}s (limit ${WALL}s)"
done

# Still serving, every killed child reaped, the pool back to its warm size.
id=$(submit "$P/diamond.lua" '{"x": 5}')
out=$(wait_run "$id" 60)
assert_eq "$(echo "$out" | json_get 'j["output"]["d"]')" 18 "the scheduler still runs pipelines"
for k in 1 2 3; do
  out=$(wait_run "$(json_get 'j["run_id"]' <"$TMP/oresp$k")" 60)
  assert_eq "$(echo "$out" | json_get 'j["state"]')" succeeded "ordinary run $k succeeded"
done
wait_for 10 bash -c "[ -z \"\$(for p in \$(pgrep -P $SCHED_PID); do awk '\$3 == \"Z\"' /proc/\$p/stat; done)\" ]" \
  || fail "zombie children: $(children Z)"
ok "no zombie among the scheduler's children"
left=$(children '')
n_left=$(echo "$left" | wc -w)
[ "$n_left" -le 16 ] || fail "$n_left children, more than the pool's bound"
ok "children after the storm: $n_left"

# Stopping the scheduler leaves no child behind.
kill -TERM "$SCHED_PID"
wait_for 20 bash -c "! kill -0 $SCHED_PID" || fail "the scheduler did not stop"
sleep 0.2
for p in $left; do
  [ -d "/proc/$p" ] && fail "sandbox child $p outlived the scheduler ($(cat /proc/$p/stat))"
done
ok "no sandbox child left after the scheduler stopped"

# Recovery through the sandbox: a stored run whose pipeline source became
# hostile fails with the limit's message, and the restarted scheduler
# answers new runs meanwhile.
if [ "$STATE_KIND" = sqlite ]; then
  start_scheduler
  id=$(submit "$P/sleepers.lua" '{"n": 4, "s": 30}')
  wait_for 20 bash -c "[ \"\$(curl -s $API/v1/runs/$id | $PY -c 'import json,sys; print(json.load(sys.stdin)[\"state\"])')\" = running ]" \
    || fail "the sleepers run did not start"
  kill -9 "$SCHED_PID"
  wait_for 10 bash -c "! kill -0 $SCHED_PID" || true
  "$PY" -c 'import sqlite3,sys
db = sqlite3.connect(sys.argv[1])
(digest,) = db.execute("select digest from runs where id=?", (sys.argv[2],)).fetchone()
db.execute("update sources set source=? where digest=?", (open(sys.argv[3]).read(), digest))
db.commit()' "$TMP/state.db" "$id" "$TMP/hostile1.lua"
  ok "the stored source of run $id is now hostile"
  t0=$(date +%s.%N)
  start_scheduler
  res=$(curl -s -o "$TMP/rresp" -w '%{http_code} %{time_total}' -X POST \
    --data-binary @"$TMP/ord1.json" "$API/v1/runs")
  assert_eq "${res%% *}" 201 "a new run is accepted while recovery reads the hostile source"
  ok "answered in ${res##* }s"
  out=$(wait_run "$id" $((WALL + MARGIN + 10)))
  assert_eq "$(echo "$out" | json_get 'j["state"]')" failed "the run whose pipeline cannot be read fails"
  assert_contains "$(echo "$out" | json_get 'j["error"]')" "time limit of $WALL s exceeded" \
    "with the limit's message"
  took=$("$PY" -c 'import sys,time; print("%.1f" % (time.time() - float(sys.argv[1])))' "$t0")
  ok "recovery failed it ${took}s after the restart"
  out=$(wait_run "$(json_get 'j["run_id"]' <"$TMP/rresp")" 60)
  assert_eq "$(echo "$out" | json_get 'j["state"]')" succeeded "the run submitted during recovery succeeded"
fi
