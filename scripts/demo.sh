#!/usr/bin/env bash
# The main job: a local cluster (scheduler, 2 CPU workers and 1 GPU-pool
# worker, embedded SQLite state under .trellis/) running the example
# pipelines, printing their results, then stopping the cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=build/cli/trellis
[ -x "$BIN" ] || { echo "demo: build first (make build)" >&2; exit 1; }
PORT="${TRELLIS_DEMO_PORT:-8420}"
export TRELLIS_API="http://127.0.0.1:$PORT"
DATA="${TRELLIS_DEMO_DATA:-.trellis}"

"$BIN" dev --data "$DATA" --api "127.0.0.1:$PORT" &
DEV=$!
trap 'kill -INT $DEV 2>/dev/null || true; wait $DEV 2>/dev/null || true' EXIT
for _ in $(seq 1 200); do
  curl -sf "$TRELLIS_API/healthz" >/dev/null 2>&1 && break
  kill -0 $DEV 2>/dev/null || { echo "demo: trellis dev stopped; see $DATA/*.log" >&2; exit 1; }
  sleep 0.1
done
sleep 0.5
"$BIN" workers
for p in lua-pipelines/diamond.lua lua-pipelines/map_reduce.lua; do
  echo
  echo "== trellis run --wait $p"
  "$BIN" run --wait "$p"
done
echo
"$BIN" runs --limit 5
