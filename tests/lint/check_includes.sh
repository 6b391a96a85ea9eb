#!/usr/bin/env bash
# Fails on an include that points the wrong way. The folders are the
# architecture (docs/architecture.md):
#   lib/base <- lib/wire <- lib/lua
#   lib/base <- lib/http
#   lib/base <- lib/etcd <- lib/state
# lib/ knows nothing of scheduler/, worker/ or cli/; the daemons never
# include each other; the CLI includes only lib/base and lib/wire.
# Within scheduler/, the parts are ordered (scheduler/sched.h): a file
# includes the headers of its own part and of parts below it, never above.
set -u
root="${1:-.}"
bad=0
# check DIR ALLOWED_REGEX: every project include in DIR must match ALLOWED.
check() {
  local dir="$1" allowed="$2" hits
  hits=$(grep -rnoE '#include "[a-z_]+/[^"]*"' "$root/$dir" --include='*.[ch]' 2>/dev/null |
         grep -vE "#include \"($allowed)" || true)
  if [ -n "$hits" ]; then
    echo "include points the wrong way in $dir/ (allowed: $allowed):"
    echo "$hits" | sed "s#^$root/##"
    bad=1
  fi
}
check lib/base  'lib/base/'
check lib/wire  'lib/(base|wire)/'
check lib/lua   'lib/(base|wire|lua)/'
check lib/http  'lib/(base|http)/'
check lib/etcd  'lib/(base|etcd)/|proto/etcd/'
check lib/state 'lib/(base|etcd|state)/'
check scheduler 'lib/|scheduler/'
check worker    'lib/(base|wire|lua|http)/|worker/'
check cli       'lib/(base|wire)/|cli/'
# The scheduler's parts, lowest first (scheduler/sched.h, docs/architecture.md).
sched_order="config model counters usage obs sandbox loader transport batch timers gpus fleet dispatch
             core leader recover metrics api sched main"
# part FILE: the part a file of scheduler/ belongs to.
part() {
  case "$1" in
    workers.[ch]) echo fleet ;;
    traces.c|metrics_pipeline.c) echo obs ;;
    core_events.c|core_flow.[ch]|core_controls.c) echo core ;;
    dispatch_place.c|dispatch_int.h) echo dispatch ;;
    sandbox_child.c) echo sandbox ;;
    api_runs.c|api_int.h|api_feedback.c|api_models.c|feedback.[ch]|feedback_int.h) echo api ;;
    auth.[ch]|audit.[ch]|tenants.[ch]) echo api ;;
    api_ui.[ch]) echo api ;;
    loop_calls.[ch]|api_flow.c) echo api ;;
    budgets.[ch]|budgets_int.h|quotas.c|budget_approvals.c) echo api ;;
    events.[ch]|webhooks.[ch]) echo api ;;
    api_triggers.c|triggers.[ch]|triggers_int.h|triggers_row.c) echo api ;;
    api_runctl.c|api_retry.c|runctl.h) echo api ;;
    *) echo "${1%.[ch]}" ;;
  esac
}
rank() {
  local i=0 p
  for p in $sched_order; do
    [ "$p" = "$1" ] && { echo "$i"; return; }
    i=$((i + 1))
  done
  echo -1
}
for f in "$root"/scheduler/*.[ch]; do
  [ -e "$f" ] || continue
  name=$(basename "$f")
  fp=$(part "$name"); fr=$(rank "$fp")
  if [ "$fr" -lt 0 ]; then
    echo "scheduler/$name belongs to no part of the order in $0 (add it there)"
    bad=1
    continue
  fi
  for h in $(grep -oE '#include "scheduler/[^"]+"' "$f" | sed -E 's/.*scheduler\/([^"]+)"/\1/'); do
    hp=$(part "$h"); hr=$(rank "$hp")
    if [ "$hp" != "$fp" ] && { [ "$hr" -lt 0 ] || [ "$hr" -ge "$fr" ]; }; then
      echo "include points up the scheduler's order: scheduler/$name ($fp) includes $h ($hp)"
      bad=1
    fi
  done
done
# Files directly in lib/ (outside a layer) are not allowed.
loose=$(find "$root/lib" -maxdepth 1 -name '*.[ch]' 2>/dev/null)
if [ -n "$loose" ]; then echo "files outside a layer of lib/:"; echo "$loose"; bad=1; fi
[ "$bad" = 0 ] && echo "include direction: ok"
exit "$bad"
