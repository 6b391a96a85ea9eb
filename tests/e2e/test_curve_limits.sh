#!/usr/bin/env bash
# CURVE keys restricted to a pool and a tenant (docs/protocol.md): a key
# allowed only for pool gpu of tenant research is refused for another pool
# (logged, counted); its worker runs research's tasks only, and another
# tenant's tasks of that pool wait for an unrestricted worker.
source "$(dirname "$0")/cluster.sh"
CLI="$BUILD/cli/trellis"
K="$TMP/keys"
for k in scheduler research any; do "$CLI" keygen "$k" --dir "$K" >/dev/null; done

# An unknown field after a key refuses the list, with its line.
printf '# keys\n%s color=red\n' "$(cat "$K/any.pub")" >"$TMP/bad-allow"
if "$SCHED_BIN" --api "127.0.0.1:$(free_port)" --listen "tcp://127.0.0.1:$(free_port)" \
    --state "sqlite:$TMP/bad.db" --curve-key "$K/scheduler.key" --curve-allow "$TMP/bad-allow" \
    >"$TMP/bad.out" 2>&1; then
  fail "the scheduler started with a bad key line"
fi
assert_contains "$(cat "$TMP/bad.out")" "line 2: unexpected 'color=red'" "a bad key line is refused"

printf '%s pool=gpu tenant=research\n%s\n' "$(cat "$K/research.pub")" "$(cat "$K/any.pub")" \
  >"$TMP/allow"
sfx=$(date +%s%N)
RT="r-$sfx"; OT="o-$sfx"
printf '%s operator research\n%s operator other\n' "$RT" "$OT" >"$TMP/tokens"
start_scheduler --curve-key "$K/scheduler.key" --curve-allow "$TMP/allow" \
  --token-file "$TMP/tokens"
get() { curl -s -H "Authorization: Bearer $1" "$API$2"; }
post() { curl -s -H "Authorization: Bearer $1" -H 'Content-Type: application/json' \
  --data-binary "$3" "$API$2"; }

start_worker wrongpool --pool cpu --curve-key "$K/research.key" --curve-server "$K/scheduler.pub"
wait_for 20 grep -q "allowed only for pool 'gpu'" "$TMP/scheduler.log" \
  || fail "the HELLO for another pool was not refused"
n=$(get "$RT" /metrics | awk '$1 == "trellis_dropped_frames_total{reason=\"key_restricted\"}" { print $2 }')
[ "${n:-0}" -ge 1 ] || fail "the refusal is not counted: $n"
ok "a key allowed only for pool gpu is refused for pool cpu (logged, counted)"
kill -TERM "$WPID" 2>/dev/null || true

start_worker research --pool gpu --curve-key "$K/research.key" --curve-server "$K/scheduler.pub"
wait_for 20 bash -c "curl -s -H 'Authorization: Bearer $RT' $API/v1/workers | grep -q w-research" \
  || fail "the research worker did not join"
assert_eq "$(get "$RT" /v1/workers | json_get '[w["tenant"] for w in j["workers"]]')" \
  '["research"]' "the worker is listed with its tenant"

body() { # pipeline name -> run body
  "$PY" -c 'import json,sys
src = """local trellis = require "trellis"
return trellis.pipeline { name = "%s", version = "1", tasks = {
  trellis.task { name = "t", pool = "gpu", run = function(ctx) return "ok" end } } }""" % sys.argv[1]
print(json.dumps({"source": src}))' "$1"
}
run_o=$(post "$OT" /v1/runs "$(body gpu-other)" | json_get 'j["run_id"]')
run_r=$(post "$RT" /v1/runs "$(body gpu-research)" | json_get 'j["run_id"]')
wait_for 30 bash -c "curl -s -H 'Authorization: Bearer $RT' '$API/v1/runs/$run_r' | grep -q succeeded" \
  || fail "research's run did not succeed on its worker"
sleep 1
assert_eq "$(get "$OT" "/v1/runs/$run_o" | json_get 'j["state"]')" queued \
  "other's run waits: the only gpu worker is research's"
start_worker shared --pool gpu --curve-key "$K/any.key" --curve-server "$K/scheduler.pub"
wait_for 30 bash -c "curl -s -H 'Authorization: Bearer $OT' '$API/v1/runs/$run_o' | grep -q succeeded" \
  || fail "other's run did not run on the unrestricted worker"
assert_eq "$(get "$OT" "/v1/runs/$run_o/tasks" | json_get 'j["tasks"][0]["worker"]')" w-shared \
  "other's task ran on the unrestricted worker"
assert_eq "$(get "$RT" "/v1/runs/$run_r/tasks" | json_get 'j["tasks"][0]["worker"]')" w-research \
  "research's task ran on its own worker"
ok "a tenant-restricted worker runs only its tenant's tasks"
echo "2 passed, 0 failed"
