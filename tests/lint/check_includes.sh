#!/usr/bin/env bash
# Fails on an include that points the wrong way: lib/ knows nothing of
# scheduler/, worker/ or cli/, and the daemons never include each other.
set -u
root="${1:-.}"
bad=0
check() { # dir pattern
  local hits
  hits=$(grep -rnE "#include \"($2)/" "$root/$1" --include='*.[ch]' 2>/dev/null)
  if [ -n "$hits" ]; then echo "include points the wrong way in $1/:"; echo "$hits"; bad=1; fi
}
check lib 'scheduler|worker|cli'
check scheduler 'worker|cli'
check worker 'scheduler|cli'
check cli 'scheduler|worker'
[ "$bad" = 0 ] && echo "include direction: ok"
exit "$bad"
