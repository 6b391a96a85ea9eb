#!/usr/bin/env bash
# Stops the etcd that start-etcd.sh started in DIR, by the PID it wrote.
#
#   stop-etcd.sh DIR [--keep] [--kill]
#
# SIGTERM, then SIGKILL after 5 s (--kill: SIGKILL at once, a crash). The
# member counts as gone once the process has exited or is a zombie that
# nobody reaps (containers without an init). Without --keep, DIR is removed.
set -u

dir=${1:?usage: stop-etcd.sh DIR [--keep] [--kill]}
keep=0
sig=TERM
for a in "${@:2}"; do
  case "$a" in
    --keep) keep=1 ;;
    --kill) sig=KILL ;;
  esac
done

gone() {
  [ -r "/proc/$1/stat" ] || return 0
  # The state follows the command name in parentheses.
  local state
  state=$(sed -e 's/^.*) //' "/proc/$1/stat" | cut -d' ' -f1)
  [ "$state" = Z ]
}

if [ -f "$dir/pid" ]; then
  pid=$(cat "$dir/pid")
  # Only an etcd is ever signalled: a stale file may name a reused PID.
  if [ -n "$pid" ] && grep -q etcd "/proc/$pid/cmdline" 2>/dev/null; then
    kill -"$sig" "$pid" 2>/dev/null || true
    for _ in $(seq 1 250); do
      gone "$pid" && break
      sleep 0.02
    done
    if ! gone "$pid"; then
      kill -KILL "$pid" 2>/dev/null || true
      for _ in $(seq 1 100); do
        gone "$pid" && break
        sleep 0.02
      done
    fi
  fi
  rm -f "$dir/pid"
fi
if [ "$keep" = 0 ]; then
  rm -rf "$dir"
fi
exit 0
