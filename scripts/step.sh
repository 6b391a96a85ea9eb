#!/usr/bin/env bash
# step.sh LOG TITLE COMMAND...: runs one step of `make demo` or `make test`
# with its output (apt's, dpkg's, CMake's, the compiler's) appended to LOG,
# and shows the person at the screen one line: the step's title, then its
# progress (make's "[ 42%]", or the last line the step wrote) on the same
# line while it runs, then how long it took. When the step fails, the end of
# the log is shown and the step's status returned.
set -uo pipefail
log="$1"
title="$2"
shift 2
mkdir -p "$(dirname "$log")"
printf '\n== %s: %s\n' "$title" "$*" >>"$log"
start=$(date +%s)
tty=0
[ -t 1 ] && tty=1

if [ "$tty" = 1 ]; then
  printf '%s ...' "$title"
  # The progress line: the last "[ NN%]" make printed, or the log's last line.
  (
    while sleep 1; do
      last=$(tail -c 4000 "$log" 2>/dev/null | tr '\r' '\n' | grep -v '^$' | tail -n 1)
      pct=$(tail -c 4000 "$log" 2>/dev/null | grep -oE '^\[ *[0-9]+%\]' | tail -n 1 | tr -d '[ ]')
      now=$(( $(date +%s) - start ))
      if [ -n "$pct" ]; then
        printf '\r\033[K%s ... %s, %ds' "$title" "$pct" "$now"
      else
        printf '\r\033[K%s ... %ds  %.60s' "$title" "$now" "$last"
      fi
    done
  ) &
  ticker=$!
fi

"$@" >>"$log" 2>&1
rc=$?
took=$(( $(date +%s) - start ))
if [ "$tty" = 1 ]; then
  kill "$ticker" 2>/dev/null
  wait "$ticker" 2>/dev/null
  printf '\r\033[K'
fi
if [ "$rc" -ne 0 ]; then
  echo "$title: failed after ${took}s (exit $rc); the end of $log:"
  tail -n 30 "$log" | sed 's/^/  | /'
  exit "$rc"
fi
echo "$title: done in ${took}s (output in $log)"
