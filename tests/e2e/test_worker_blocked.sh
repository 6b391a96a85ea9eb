#!/usr/bin/env bash
# A task stuck in one long C call (a pattern match no hook can stop): the
# worker's watchdog keeps it listed meanwhile, then reports the attempt
# failed (worker_blocked) and exits with status 70; its supervisor restarts
# it. After its retries the poison task fails its run, instead of taking
# down every worker one after another; the restarted workers run other work.
source "$(dirname "$0")/cluster.sh"
P="$SRC/tests/e2e/pipelines"

# supervise NAME FLAGS...: runs worker NAME again each time it exits with 70,
# recording every exit status in $TMP/exits-NAME.
supervise() {
  local name="$1"; shift
  local child=""
  trap '[ -n "$child" ] && kill -TERM "$child" 2>/dev/null; exit 0' TERM
  while :; do
    "$WORKER_BIN" --scheduler "tcp://127.0.0.1:$WPORT" --id "w-$name" "$@" \
      >>"$TMP/worker-$name.log" 2>&1 &
    child=$!
    local rc=0
    wait "$child" || rc=$?
    echo "$rc" >>"$TMP/exits-$name"
    [ "$rc" = 70 ] || return 0
  done
}

start_scheduler
supervise a --slots 2 --max-block 2 &
PIDS+=($!)
supervise b --slots 2 --max-block 2 &
PIDS+=($!)
wait_workers 2

id=$(submit "$P/poison.lua")
out=$(wait_run "$id" 120)
assert_eq "$(echo "$out" | json_get 'j["state"]')" failed "the poison task fails its run"
tasks=$(api_get "/v1/runs/$id/tasks")
assert_eq "$(echo "$tasks" | json_get 'j["tasks"][0]["attempts"]')" 2 "after its two attempts (retries = 1)"
assert_contains "$(echo "$tasks" | json_get 'j["tasks"][0]["error"]')" "worker_blocked" \
  "the attempt failed with worker_blocked"
exits=$(cat "$TMP"/exits-* 2>/dev/null | sort | tr '\n' ' ')
assert_eq "$exits" "70 70 " "two workers exited with status 70, one per attempt"
grep -h "worker loop blocked" "$TMP"/worker-*.log | grep -q "by task 'poison'" \
  || fail "no log line names the blocking task"
ok "the log line names the task"
grep -q 'refused stale result' "$TMP/scheduler.log" && fail "a worker_blocked result was refused as stale"
ok "no result was refused as stale"

wait_workers 2
ok "both workers are back"
id=$(submit "$P/hello.lua")
assert_eq "$(wait_run "$id" 30 | json_get 'j["state"]')" succeeded "the restarted workers run tasks"
echo "all passed"
