#!/usr/bin/env bash
# The `trellis` CLI against a real cluster started by `trellis dev`: run
# --wait and its output, runs/status/tasks/logs/workers, register and run by
# name, -p values as JSON, cancel, a failing pipeline (exit 1 with the task's
# error), usage errors (exit 2), an unreachable API (exit 3), bearer tokens
# from --token-file and TRELLIS_TOKEN, Ctrl-C of a waiting run (exit 130, the
# run goes on), `trellis dev --run`, and Ctrl-C of `trellis dev` stopping
# every child it started.
source "$(dirname "$0")/lib.sh"

TRELLIS="$BUILD/cli/trellis"
P="$SRC/tests/e2e/pipelines"
DIAMOND="$SRC/lua-pipelines/diamond.lua"
[ -x "$TRELLIS" ] || fail "no trellis binary at $TRELLIS"
[ -x "$BUILD/scheduler/trellis-scheduler" ] || fail "no trellis-scheduler in $BUILD/scheduler"
[ -x "$BUILD/worker/trellis-worker" ] || fail "no trellis-worker in $BUILD/worker"

# Runs the CLI with a time limit; stdout in OUT, stderr in ERR, exit code in RC.
cli() {
  RC=0
  timeout 120 "$TRELLIS" "$@" >"$TMP/cli.out" 2>"$TMP/cli.err" || RC=$?
  OUT=$(cat "$TMP/cli.out")
  ERR=$(cat "$TMP/cli.err")
}

# ---------------------------------------------------------------- a cluster
API_PORT=$(free_port)
export TRELLIS_API="http://127.0.0.1:$API_PORT"
DATA="$TMP/data"
start_bg "$TMP/dev.log" "$TRELLIS" dev --data "$DATA" --api "127.0.0.1:$API_PORT" \
  --workers 2 --gpu-workers 1 --slots 4 --timeout 60
DEV_PID=$BG_PID
wait_for_text "$TMP/dev.log" "ready: API at $TRELLIS_API" 90 \
  || fail "trellis dev did not become ready: $(cat "$TMP/dev.log")"
ok "trellis dev is ready"
[ -f "$DATA/scheduler.log" ] && [ -f "$DATA/worker-cpu-1.log" ] && [ -f "$DATA/worker-gpu-1.log" ] \
  || fail "logs not in the data directory: $(ls "$DATA")"
ok "children log into the data directory"
assert_eq "$(procs_with "$DATA/state.db" | wc -l)" 1 "one scheduler on the data directory"

cli dev --data "$TMP/other" --api "127.0.0.1:$API_PORT" --workers 0 --gpu-workers 0
assert_eq "$RC" 1 "a second dev on a used API address exits 1"
assert_contains "$ERR" "already in use" "it says the address is in use"

# ---------------------------------------------------------------- run --wait
cli run --wait -p x=7 "$DIAMOND"
assert_eq "$RC" 0 "run --wait of the diamond exits 0"
assert_eq "$(echo "$OUT" | json_get 'j')" '{"d": 24}' "run --wait prints the output as JSON"
assert_contains "$ERR" "succeeded" "progress and outcome go to stderr"
RUN=$(echo "$ERR" | sed -n 's/^started run \([^ ]*\)$/\1/p' | head -n 1)
[ -n "$RUN" ] || fail "no 'started run ID' line in: $ERR"
ok "run --wait names the run ($RUN)"

cli run -p x=2 "$DIAMOND"
assert_eq "$RC" 0 "run without --wait exits 0"
case "$OUT" in
  r-*) ok "run without --wait prints the run id" ;;
  *) fail "not a run id: $OUT" ;;
esac
RUN2="$OUT"
cli status --json "$RUN2"
assert_eq "$(echo "$OUT" | json_get 'j["params"]["x"]')" 2 "-p x=2 is sent as the number 2"

# ---------------------------------------------------------------- inspect
cli runs
assert_eq "$RC" 0 "runs exits 0"
assert_contains "$OUT" "$RUN" "runs lists the run"
assert_contains "$(echo "$OUT" | head -n 1)" "RUN" "runs prints a header"
cli runs --state succeeded --limit 1000 --json
assert_contains "$(echo "$OUT" | json_get '[r["run_id"] for r in j["runs"]]')" "$RUN" \
  "runs --state succeeded --json has the run"

cli status "$RUN"
assert_eq "$RC" 0 "status exits 0"
assert_contains "$OUT" "state:     succeeded" "status shows the state"
assert_contains "$OUT" "pipeline:  diamond (version 1)" "status shows the pipeline"
assert_contains "$OUT" "4 total: 4 succeeded" "status shows task counts"
assert_contains "$OUT" '"d": 24' "status shows the output"

cli tasks "$RUN"
assert_eq "$RC" 0 "tasks exits 0"
assert_eq "$(echo "$OUT" | head -n 1 | awk '{print $1, $2, $3, $4}')" "NAME INDEX STATE ATTEMPTS" \
  "tasks prints a header"
assert_eq "$(echo "$OUT" | tail -n +2 | awk '{print $1 ":" $3}' | tr '\n' ' ')" \
  "a:succeeded b:succeeded c:succeeded d:succeeded " "tasks lists a, b, c, d succeeded"

cli logs "$RUN"
assert_eq "$RC" 0 "logs exits 0"
assert_eq "$OUT" "d: sum of 14 and 10" "logs shows the lines of the run's tasks"
cli logs "$RUN" d
assert_eq "$OUT" "d: sum of 14 and 10" "logs RUN TASK shows that task's lines"
cli logs "$RUN" a
assert_eq "$RC$OUT" "0" "logs RUN TASK shows nothing for a task that logged nothing"
cli run --wait -p x=5 "$P/diamond.lua"
E2E_RUN=$(echo "$ERR" | sed -n 's/^started run \([^ ]*\)$/\1/p' | head -n 1)
cli logs "$E2E_RUN"
assert_eq "$(echo "$OUT" | tr '\n' '|')" "a: start 5|d: sum of 10 and 8|" \
  "logs shows every task's lines in task order"

cli workers
assert_eq "$RC" 0 "workers exits 0"
assert_eq "$(echo "$OUT" | tail -n +2 | awk '{print $2}' | sort | tr '\n' ' ')" "cpu cpu gpu " \
  "workers lists 2 cpu and 1 gpu workers"
cli workers --json
assert_eq "$(echo "$OUT" | json_get 'sorted(w["pool"] for w in j["workers"])')" \
  '["cpu", "cpu", "gpu"]' "workers --json agrees"

# ---------------------------------------------------------------- register, run by name
cli register "$DIAMOND"
assert_eq "$RC" 0 "register exits 0"
assert_contains "$OUT" "registered pipeline 'diamond' version 1" "register names the pipeline"
cli pipelines
assert_contains "$OUT" "diamond" "pipelines lists it"
cli run --wait diamond@1 -p x=1
assert_eq "$RC" 0 "run NAME@VERSION --wait exits 0"
assert_eq "$(echo "$OUT" | json_get 'j')" '{"d": 6}' "the registered pipeline ran with x = 1"

# ---------------------------------------------------------------- failures
cli run --wait "$P/raises.lua"
assert_eq "$RC" 1 "a failing run exits 1"
assert_contains "$ERR" "task 'boom' failed" "it names the failed task"
assert_contains "$ERR" ":3: bad input 1" "it shows the task's error with its line"
assert_contains "$ERR" "stack traceback" "it shows the task's traceback"
assert_eq "$(echo "$ERR" | grep -c "stack traceback")" 1 "the traceback is shown once"
assert_eq "$OUT" "" "nothing on stdout for a failed run"

printf 'local trellis = require "trellis"\nreturn trellis.pipeline {\n  tasks = { ,\n}\n' \
  >"$TMP/bad.lua"
cli run "$TMP/bad.lua"
assert_eq "$RC" 1 "a pipeline that does not load exits 1"
assert_contains "$ERR" "cannot start a run of" "it says the run did not start"
assert_contains "$ERR" "bad.lua:3" "it shows the Lua error's line"

cli status r-does-not-exist
assert_eq "$RC" 1 "status of an unknown run exits 1"
assert_contains "$ERR" "error:" "it says why"

cli run
assert_eq "$RC" 2 "run without FILE is a usage error"
cli runs --limit 0
assert_eq "$RC" 2 "a bad --limit is a usage error"
cli runs --limit 0x10
assert_eq "$RC" 2 "a hexadecimal --limit is a usage error"
assert_contains "$ERR" "bad value '0x10' for --limit: not a decimal number" "it names the flag"
cli runs --lmit 5
assert_eq "$RC" 2 "an unknown flag is a usage error"
assert_contains "$ERR" "did you mean --limit?" "it suggests the flag meant"
cli run -p novalue "$DIAMOND"
assert_eq "$RC" 2 "-p without = is a usage error"
cli frobnicate
assert_eq "$RC" 2 "an unknown command is a usage error"

DEAD_PORT=$(free_port)
cli --api "http://127.0.0.1:$DEAD_PORT" runs
assert_eq "$RC" 3 "an unreachable scheduler exits 3"
assert_contains "$ERR" "cannot reach scheduler at http://127.0.0.1:$DEAD_PORT: connection refused" \
  "it names the URL and the reason"

# ---------------------------------------------------------------- cancel and Ctrl-C
cli run -p n=2 -p s=30 "$P/sleepers.lua"
SLOW="$OUT"
wait_for 30 bash -c "'$TRELLIS' status --json '$SLOW' | grep -q '\"running\": [1-9]'" \
  || fail "the sleepers never ran"
start_bg "$TMP/wait.out" "$TRELLIS" run --wait "$P/sleepers.lua" -p n=1 -p s=30
WAITER=$BG_PID
wait_for_text "$TMP/wait.out" "started run" 30 || fail "run --wait did not start"
WAITED=$(sed -n 's/^started run \([^ ]*\)$/\1/p' "$TMP/wait.out")
kill -INT "$WAITER"
wait_exit "$WAITER" 10
assert_eq "$EXIT_CODE" 130 "Ctrl-C of run --wait exits 130"
assert_contains "$(cat "$TMP/wait.out")" "cancel it with" "it says how to cancel the run"
cli status --json "$WAITED"
assert_contains "queued running" "$(echo "$OUT" | json_get 'j["state"]')" \
  "the run goes on after Ctrl-C"

cli cancel "$SLOW"
assert_eq "$RC" 0 "cancel exits 0"
assert_contains "$OUT" "cancelled run $SLOW" "cancel says so"
cli cancel "$WAITED"
assert_eq "$RC" 0 "the run left behind by Ctrl-C can be cancelled"
wait_for 20 bash -c "'$TRELLIS' status '$SLOW' | grep -q 'state:     cancelled'" \
  || fail "the run did not end cancelled"
ok "the cancelled run ends cancelled"
cli run --wait "$P/sleepers.lua" -p n=1 -p s=0
assert_eq "$RC" 0 "the cluster still runs pipelines after a cancel"
cli cancel "$SLOW"
assert_eq "$RC" 1 "cancelling a finished run exits 1"

# ---------------------------------------------------------------- Ctrl-C of trellis dev
kill -INT "$DEV_PID"
wait_exit "$DEV_PID" 20
assert_eq "$EXIT_CODE" 0 "Ctrl-C stops trellis dev with exit 0"
assert_contains "$(cat "$TMP/dev.log")" "stopped" "trellis dev says it stopped"
assert_eq "$(procs_with "$DATA" | wc -l)" 0 "no scheduler or worker of the cluster is left"

# ---------------------------------------------------------------- bearer tokens
AUTH_PORT=$(free_port)
printf 's3cret-token-1\n' >"$TMP/tokens"
printf '# the token\n\n  s3cret-token-1  \n' >"$TMP/token-file"
start_bg "$TMP/auth-scheduler.log" "$BUILD/scheduler/trellis-scheduler" \
  --api "127.0.0.1:$AUTH_PORT" --listen "tcp://127.0.0.1:$(free_port)" \
  --state "sqlite:$TMP/auth.db" --token-file "$TMP/tokens"
AUTH_PID=$BG_PID
wait_for_url "http://127.0.0.1:$AUTH_PORT/healthz" 30 || fail "the token scheduler did not start"
cli --api "http://127.0.0.1:$AUTH_PORT" workers
assert_eq "$RC" 1 "without a token the scheduler refuses (exit 1)"
assert_contains "$ERR" "TRELLIS_TOKEN" "the refusal says how to pass a token"
cli --api "http://127.0.0.1:$AUTH_PORT" --token-file "$TMP/token-file" runs
assert_eq "$RC" 0 "--token-file is sent as a bearer token"
RC=0
TRELLIS_TOKEN=s3cret-token-1 timeout 30 "$TRELLIS" --api "http://127.0.0.1:$AUTH_PORT" runs \
  >/dev/null 2>&1 || RC=$?
assert_eq "$RC" 0 "TRELLIS_TOKEN is sent as a bearer token"
cli --api "http://127.0.0.1:$AUTH_PORT" --token-file "$TMP/missing" runs
assert_eq "$RC" 2 "an unreadable token file is a usage error"
RC=0
TRELLIS_TOKEN=s3cret-token-1 TRELLIS_TOKEN_FILE="$TMP/missing" timeout 30 "$TRELLIS" \
  --api "http://127.0.0.1:$AUTH_PORT" runs >/dev/null 2>&1 || RC=$?
assert_eq "$RC" 0 "TRELLIS_TOKEN beats TRELLIS_TOKEN_FILE"
RC=0
TRELLIS_TOKEN=wrong timeout 30 "$TRELLIS" --api "http://127.0.0.1:$AUTH_PORT" runs \
  --token-file "$TMP/token-file" >/dev/null 2>&1 || RC=$?
assert_eq "$RC" 0 "--token-file (after the command too) beats TRELLIS_TOKEN"
kill -TERM "$AUTH_PID"
wait_exit "$AUTH_PID" 10

# ---------------------------------------------------------------- trellis dev --run
API2=$(free_port)
cli dev --data "$TMP/data2" --api "127.0.0.1:$API2" --workers 1 --gpu-workers 0 --timeout 60 \
  --run "$DIAMOND" -p x=7
assert_eq "$RC" 0 "dev --run exits 0"
assert_eq "$(echo "$OUT" | json_get 'j')" '{"d": 24}' "dev --run prints the output"
assert_contains "$ERR" "stopped" "dev --run stops the cluster"
assert_eq "$(procs_with "$TMP/data2" | wc -l)" 0 "dev --run leaves no process behind"

cli dev --data "$TMP/data3" --api "127.0.0.1:$API2" --workers 1 --gpu-workers 0 --timeout 60 \
  --run "$P/raises.lua"
assert_eq "$RC" 1 "dev --run of a failing pipeline exits 1"
assert_contains "$ERR" "task 'boom' failed" "dev --run shows the failed task"
assert_eq "$(procs_with "$TMP/data3" | wc -l)" 0 "and leaves no process behind"
echo "all CLI checks passed"
