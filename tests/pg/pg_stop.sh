#!/usr/bin/env bash
# Stops the PostgreSQL of pg_start.sh DIR (fast shutdown; a no-op when it
# is not running). Keeps DIR unless --rm.
dir=${1:?usage: pg_stop.sh DIR [--rm]}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
as=()
[ "$(id -u)" = 0 ] && as=(runuser -u "$(stat -c %U "$dir/data" 2>/dev/null || echo postgres)" --)
if [ -f "$dir/data/postmaster.pid" ]; then
  "${as[@]}" "$PG_BIN/pg_ctl" -D "$dir/data" -m fast -w -t 60 -s stop >/dev/null 2>&1 \
    || kill -KILL "$(head -n1 "$dir/data/postmaster.pid")" 2>/dev/null || true
fi
[ "${2:-}" = --rm ] && rm -rf "$dir"
exit 0
