#!/usr/bin/env bash
# Runs one libFuzzer harness of a TR_FUZZ build (docs/fuzzing.md).
#
#   tests/fuzz/run.sh BUILD NAME SECONDS   fuzz for SECONDS; new inputs go to
#                                          BUILD/fuzz-work/NAME, crashes to
#                                          BUILD/fuzz-artifacts/NAME/, the log
#                                          to BUILD/fuzz-logs/
#   tests/fuzz/run.sh BUILD NAME merge     minimises the repository corpus with
#                                          what the runs found (-merge=1)
set -euo pipefail
build=$1 name=$2 what=$3
src=$(cd "$(dirname "$0")" && pwd)
bin=$build/tests/fuzz/fuzz_$name
corpus=$src/corpus/$name
work=$build/fuzz-work/$name
[ -x "$bin" ] || { echo "run.sh: no $bin (configure with -DTR_FUZZ=ON)" >&2; exit 1; }
mkdir -p "$work" "$build/fuzz-artifacts/$name" "$build/fuzz-logs"
# Hostile sizes must be refused before allocating: an allocation of more
# than 1 GiB is a finding, not an out-of-memory exit.
export ASAN_OPTIONS=${ASAN_OPTIONS:-allocator_may_return_null=1:detect_leaks=1}
opts=(-rss_limit_mb=2048 -malloc_limit_mb=1024 -timeout=10 -max_len=8192
      -dict="$src/dict/$name.dict" -print_final_stats=1)
if [ "$what" = merge ]; then
  # Keeps the hand-made seeds (seed-*, tests/fuzz/make_seeds.py) and adds
  # the fewest found inputs that bring the rest of the coverage of the
  # repository corpus plus the work corpus.
  tmp=$(mktemp -d)
  cp "$corpus"/seed-* "$tmp"/
  "$bin" -merge=1 "${opts[@]}" "$tmp" "$corpus" "$work"
  find "$corpus" -type f ! -name 'seed-*' -delete
  find "$tmp" -type f ! -name 'seed-*' -exec cp {} "$corpus"/ \;
  rm -rf "$tmp"
  exit 0
fi
log=$build/fuzz-logs/$name-$(date -u +%Y%m%dT%H%M%S).log
echo "run.sh: $bin for $what s, log $log" >&2
start=$(date +%s)
set +e
"$bin" "${opts[@]}" -max_total_time="$what" -artifact_prefix="$build/fuzz-artifacts/$name/" \
  "$work" "$corpus" >"$log" 2>&1
rc=$?
set -e
echo "run.sh: exit $rc after $(( $(date +%s) - start )) s" | tee -a "$log" >&2
grep -E '^#[0-9]+[[:space:]]+(INITED|DONE)' "$log" | tail -2 >&2 || true
grep -E 'stat::' "$log" >&2 || true
exit $rc
