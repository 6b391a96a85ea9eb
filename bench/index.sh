#!/usr/bin/env bash
# bench/index.sh - ingestion and query throughput of trellis.index on its two
# backends, SQLite and PostgreSQL, on this machine (docs/performance.md).
#
# Builds trellis-bench-index in a Release tree (build-bench-release) unless
# --no-build, starts a PostgreSQL of its own (tests/pg/pg_start.sh: initdb in
# a temporary folder, 127.0.0.1 on a free port; stopped at the end, even on
# failure or Ctrl-C), and runs trellis-bench-index --url ... with the
# arguments given (default --repeat 3). Output: one line per backend and
# repeat, and "# median" lines; also saved in bench/out/<date>/index.txt.
#
# Usage: bench/index.sh [--no-build] [-- trellis-bench-index args]
#   e.g. bench/index.sh -- --docs 20000 --queries 300 --repeat 5
# Environment: BUILD_DIR (default <repo>/build-bench-release), PG_BIN.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
BUILD="${BUILD_DIR:-$REPO/build-bench-release}"
DO_BUILD=1
ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --no-build) DO_BUILD=0; shift ;;
    --) shift; ARGS+=("$@"); break ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "index.sh: unknown option '$1' (trellis-bench-index options go after --)" >&2; exit 2 ;;
  esac
done
[ "${#ARGS[@]}" -gt 0 ] || ARGS=(--repeat 3)

if [ "$DO_BUILD" = 1 ]; then
  cmake -S "$REPO" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DTR_SANITIZE=OFF -DTR_WERROR=OFF >/dev/null
  cmake --build "$BUILD" -j2 --target trellis-bench-index >/dev/null
fi
TB="$BUILD/bench/trellis-bench-index"
[ -x "$TB" ] || { echo "index.sh: no $TB: build it, or drop --no-build" >&2; exit 2; }

OUT="$HERE/out/$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT"
TMPD=$(mktemp -d "${TMPDIR:-/tmp}/trellis-bench-index-XXXXXX")
trap 'bash "$REPO/tests/pg/pg_stop.sh" "$TMPD/pg" --rm; rm -rf "$TMPD"' EXIT
trap 'exit 130' INT TERM
bash "$REPO/tests/pg/pg_start.sh" "$TMPD/pg"
"$TB" --url "$(cat "$TMPD/pg/url")" --dir "$TMPD" "${ARGS[@]}" | tee "$OUT/index.txt"
