#!/usr/bin/env bash
# check_conventions.sh SRC [SCHEDULER WORKER] - conventions that grep can check.
#
#  1. No libuv private fields in lib/, cli/ or bench/ (uv.h marks them private;
#     timer_cb was one): a handle's callback is passed to uv_*_start, not
#     read back from the handle.
#  2. No hand-written option parsing: flags and TRELLIS_* variables go through
#     lib/base/flags.h, so getopt and strtoul/strtol on option values have no
#     place in the programs' main files.
#  3. With the daemons' paths: every flag their --help lists is in
#     docs/daemons.md, with its TRELLIS_* variable.
set -euo pipefail
src=${1:?usage: check_conventions.sh SRC [SCHEDULER WORKER]}
cd "$src"
fail=0

private='\btimer_cb\b|\buv__|\bio_watcher\b|\bwatcher_queue\b|\bhandle_queue\b'
private+='|\bactive_handles\b|\bnext_closing\b'
if grep -rnE "$private" lib cli bench --include='*.c' --include='*.h'; then
  echo "libuv private fields used above" >&2
  fail=1
fi

if grep -nE '\bgetopt(_long)?\b|\bstrto(u?l|ull|ll)\(|\bapply_env\b|\bparse_uint\b' \
    scheduler/main.c worker/main.c cli/main.c cli/cmd_*.c bench/trellis_bench.c; then
  echo "option parsing by hand above: use lib/base/flags.h" >&2
  fail=1
fi

if [ $# -ge 3 ]; then
  for bin in "$2" "$3"; do
    flags=$("$bin" --help | grep -oE '^ +(-[a-z], )?--[a-z0-9-]+' | grep -oE -- '--[a-z0-9-]+')
    for flag in $flags; do
      [ "$flag" = --help ] && continue
      var=TRELLIS_$(echo "${flag#--}" | tr 'a-z-' 'A-Z_')
      if ! grep -qE -- "\`$flag[ \`].*\`$var\`" docs/daemons.md; then
        echo "docs/daemons.md does not list $flag of $(basename "$bin") with $var" >&2
        fail=1
      fi
    done
  done
fi

[ "$fail" = 0 ] && echo "conventions: ok"
exit "$fail"
