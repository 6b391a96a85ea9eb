#!/usr/bin/env bash
# Fails on an include that points the wrong way. The folders are the
# architecture (docs/architecture.md):
#   lib/base <- lib/wire <- lib/lua
#   lib/base <- lib/http
#   lib/base <- lib/etcd <- lib/state
# lib/ knows nothing of scheduler/, worker/ or cli/; the daemons never
# include each other; the CLI includes only lib/base and lib/wire.
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
check worker    'lib/(base|wire|lua)/|worker/'
check cli       'lib/(base|wire)/|cli/'
# Files directly in lib/ (outside a layer) are not allowed.
loose=$(find "$root/lib" -maxdepth 1 -name '*.[ch]' 2>/dev/null)
if [ -n "$loose" ]; then echo "files outside a layer of lib/:"; echo "$loose"; bad=1; fi
[ "$bad" = 0 ] && echo "include direction: ok"
exit "$bad"
