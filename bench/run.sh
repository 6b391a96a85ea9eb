#!/usr/bin/env bash
# bench/run.sh - Trellis against Dask and Celery, on this machine, in one invocation.
#
# Builds a Release tree (build-bench-release, no sanitizers) if needed, runs
# trellis-bench --repeat R, then the peers' run_peers.sh R times, and prints a
# table of medians and ratios beside the targets of the foundation issue.
# Raw output goes to bench/out/<date>/ (gitignored); bench/out/latest points
# at the newest. Progress is on stderr, the table on stdout.
#
# Usage: bench/run.sh [--repeat R] [--no-peers] [--no-build] [--only LIST]
#                     [--w1 N] [--w2 N] [--w3 N] [--w4 N] [--l N] [-- trellis-bench args]
# Environment: BUILD_DIR (default <repo>/build-bench-release), PEERS_DIR (default
# <repo>/../shared/bench/peers), PYTHON (default /usr/bin/python3, whose
# packages include Debian's dask, distributed, celery and redis), PEERS_REPEAT
# (default R), and run_peers.sh's own PEERS_ONLY, PEERS_TIMEOUT, PEERS_QUIET.
set -u
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
BUILD="${BUILD_DIR:-$REPO/build-bench-release}"
PEERS_DIR="${PEERS_DIR:-$REPO/../shared/bench/peers}"

usage() {
  sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
}

REPEAT=3
PEERS=1
DO_BUILD=1
ONLY=""
TB_ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --repeat) REPEAT="${2:?--repeat needs a number}"; shift 2 ;;
    --no-peers) PEERS=0; shift ;;
    --no-build) DO_BUILD=0; shift ;;
    --only) ONLY="${2:?--only needs a list}"; TB_ARGS+=(--only "$2"); shift 2 ;;
    --w1|--w2|--w3|--w4)
      n="${2:?$1 needs a number}"
      TB_ARGS+=("$1" "$n")
      # the peers run the same size, or the ratio would compare different work
      export "PEERS_W${1#--w}_N=$n"
      shift 2 ;;
    --l) TB_ARGS+=(--l "${2:?--l needs a number}"); shift 2 ;;
    -h|--help) usage; exit 0 ;;
    --) shift; TB_ARGS+=("$@"); break ;;
    *) echo "run.sh: unknown option '$1' (trellis-bench options go after --)" >&2; exit 2 ;;
  esac
done
case "$REPEAT" in ''|*[!0-9]*|0) echo "run.sh: --repeat wants a positive number" >&2; exit 2 ;; esac
PEERS_REPEAT="${PEERS_REPEAT:-$REPEAT}"

STAMP="$(date +%Y%m%d-%H%M%S)"
OUT="$HERE/out/$STAMP"
mkdir -p "$OUT" || exit 2
ln -sfn "$STAMP" "$HERE/out/latest"
note() { echo "[run.sh $(date +%H:%M:%S)] $*" >&2; }

# Bash runs a trap only after the foreground command returns; the commands
# below stop what they started on SIGINT/SIGTERM themselves.
trap 'note "interrupted; partial output in $OUT"; exit 130' INT TERM

# ---- build -------------------------------------------------------------------
if [ "$DO_BUILD" = 1 ]; then
  note "building Release in $BUILD (log: $OUT/build.log)"
  # TR_WERROR off: a warning that only -O2 finds in someone's file should not
  # stop a measurement; the Debug/sanitizer builds keep -Werror.
  if ! { cmake -S "$REPO" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DTR_SANITIZE=OFF \
           -DTR_WERROR=OFF &&
         cmake --build "$BUILD" -j2 --target trellis-bench trellis-scheduler trellis-worker; } \
       >"$OUT/build.log" 2>&1; then
    tail -n 30 "$OUT/build.log" >&2
    note "build failed; see $OUT/build.log"
    exit 2
  fi
fi
TB="$BUILD/bench/trellis-bench"
[ -x "$TB" ] || { note "no $TB: build it, or drop --no-build"; exit 2; }

{
  echo "# run.sh date=$(date +%Y-%m-%dT%H:%M:%S%z) repeat=$REPEAT peers_repeat=$PEERS_REPEAT" \
       "git=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')$(
         git -C "$REPO" diff --quiet HEAD -- 2>/dev/null || echo '-dirty')" \
       "built=$(date -r "$TB" +%Y-%m-%dT%H:%M:%S%z)" \
       "load=$(cut -d' ' -f1-3 /proc/loadavg | tr ' ' ,)"
} | tee "$OUT/meta.txt"

# ---- Trellis -----------------------------------------------------------------
note "trellis-bench --repeat $REPEAT ${TB_ARGS[*]} (raw: $OUT/trellis.txt)"
"$TB" --bin-dir "$BUILD" --repeat "$REPEAT" "${TB_ARGS[@]}" \
  2> >(tee "$OUT/trellis.log" >&2) | tee "$OUT/trellis.txt"
TB_RC=${PIPESTATUS[0]}
[ "$TB_RC" = 0 ] || note "trellis-bench exited $TB_RC (see $OUT/trellis.log)"

# ---- peers -------------------------------------------------------------------
PEERS_RC=0
: >"$OUT/peers.txt"
if [ "$PEERS" = 1 ]; then
  if [ ! -x "$PEERS_DIR/run_peers.sh" ] && [ ! -f "$PEERS_DIR/run_peers.sh" ]; then
    note "no run_peers.sh in '$PEERS_DIR' (set PEERS_DIR, or use --no-peers)"
    PEERS_RC=2
  else
    if [ -z "${PYTHON:-}" ] && [ -x /usr/bin/python3 ]; then export PYTHON=/usr/bin/python3; fi
    # --only trims the peers' scripts to the workloads asked for
    if [ -n "$ONLY" ] && [ -z "${PEERS_ONLY:-}" ]; then
      po=""
      case ",${ONLY^^}," in *,W1,*|*,W2,*|*,W3,*) po="dask,celery" ;; esac
      case ",${ONLY^^}," in *,W1,*|*,W3,*) po="$po,dask-satinf" ;; esac
      case ",${ONLY^^}," in *,W4,*) po="$po,dask-w4" ;; esac
      export PEERS_ONLY="${po#,}"
    fi
    if [ -n "$ONLY" ] && [ -z "${PEERS_ONLY:-}" ]; then
      note "no peer runs the workloads '$ONLY'"
    else
      for i in $(seq 1 "$PEERS_REPEAT"); do
        note "peers run $i of $PEERS_REPEAT: $PEERS_DIR/run_peers.sh (raw: $OUT/peers.txt)"
        bash "$PEERS_DIR/run_peers.sh" 2> >(tee -a "$OUT/peers.log" >&2) | tee -a "$OUT/peers.txt"
        rc=${PIPESTATUS[0]}
        if [ "$rc" != 0 ]; then note "run_peers.sh exited $rc"; PEERS_RC=$rc; fi
      done
    fi
  fi
fi

# ---- report ------------------------------------------------------------------
{
  echo
  awk -f "$HERE/report.awk" "$OUT/trellis.txt" "$OUT/peers.txt"
  echo
  echo "raw output: $OUT"
} | tee "$OUT/report.txt"

[ "$TB_RC" = 0 ] && [ "$PEERS_RC" = 0 ]
