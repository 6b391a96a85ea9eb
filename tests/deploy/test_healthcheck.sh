#!/usr/bin/env bash
# The image's health check (deploy/trellis-healthcheck) against real daemons
# on loopback: a scheduler is healthy while /healthz answers, a worker while
# it holds a connection to a scheduler's worker port, and neither once gone.
source "$TR_SOURCE_DIR/tests/e2e/cluster.sh"
HC="$SRC/deploy/trellis-healthcheck"

start_scheduler
wait_for 20 curl -sf "$API/healthz" || fail "the scheduler did not answer /healthz"
TRELLIS_HEALTHCHECK_PID=$SCHED_PID "$HC" || fail "a live scheduler is reported unhealthy"
ok "a live scheduler is healthy"

# The worker's endpoint comes from the environment here, as in the chart.
TRELLIS_SCHEDULER="tcp://127.0.0.1:$WPORT" "$WORKER_BIN" --id w-hc --pool cpu \
  >"$TMP/worker-hc.log" 2>&1 &
W=$!
PIDS+=("$W")
wait_workers 1
wait_for 20 env TRELLIS_HEALTHCHECK_PID=$W "$HC" || fail "a connected worker is reported unhealthy"
ok "a connected worker is healthy"

kill -TERM "$SCHED_PID"; wait "$SCHED_PID" 2>/dev/null || true
wait_for 20 bash -c "! TRELLIS_HEALTHCHECK_PID=$W $HC" ||
  fail "a worker without a scheduler stays healthy"
ok "a worker cut off from its scheduler is unhealthy"

if TRELLIS_HEALTHCHECK_PID=$$ "$HC" 2>/dev/null; then fail "a shell counted as a daemon"; fi
ok "a process that is no trellis daemon is refused"

# As in a container: its own PID namespace, no pid given, the daemon found by
# name among its pipeline sandbox children. Skipped where namespaces cannot
# be made (an unprivileged CI runner).
if unshare --pid --fork --mount-proc true 2>/dev/null; then
  P=$(free_port)
  W2=$(free_port)
  out=$(timeout 60 unshare --pid --fork --mount-proc bash -c '
    cd "$1" && TRELLIS_API="127.0.0.1:$2" "$3" --listen "tcp://127.0.0.1:$4" \
      --state "sqlite:$1/ns.db" >"$1/ns-scheduler.log" 2>&1 &
    for i in $(seq 200); do curl -sf "http://127.0.0.1:$2/healthz" >/dev/null && break; sleep 0.1; done
    for i in $(seq 100); do grep -q -- --sandbox-child /proc/[0-9]*/cmdline 2>/dev/null && break; sleep 0.1; done
    "$5" && echo HEALTHY
    kill %1; wait' _ "$TMP" "$P" "$SCHED_BIN" "$W2" "$HC" 2>&1) || true
  assert_contains "$out" HEALTHY "in its own PID namespace, the scheduler is found and healthy"
else
  echo "skip - no PID namespace here (unshare)"
fi
