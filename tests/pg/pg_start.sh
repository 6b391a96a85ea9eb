#!/usr/bin/env bash
# Starts a throwaway PostgreSQL for tests on 127.0.0.1 and a free port, and
# returns once it accepts connections.
#
#   pg_start.sh DIR
#
# DIR holds everything: data/ (initdb's cluster, trust authentication for
# local connections only), sock/ (the unix socket), pg.log, port and url
# (postgresql://trellis@127.0.0.1:PORT/trellis, what clients read); run on
# a DIR that pg_stop.sh stopped, it restarts the same cluster on the same
# port when it is still free. The
# server listens on 127.0.0.1 only. Stop it with pg_stop.sh DIR (callers put
# that in their EXIT trap, so a failing test stops it too).
# PG_BIN overrides the folder of initdb/pg_ctl (default: Debian's 15).
set -euo pipefail

dir=${1:?usage: pg_start.sh DIR}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
[ -x "$PG_BIN/initdb" ] || { echo "pg_start: $PG_BIN/initdb not found (apt-get install postgresql-15)" >&2; exit 1; }
mkdir -p "$dir/sock"
dir=$(cd "$dir" && pwd)
# A restart (DIR was started before) takes the same port again.
want=$(cat "$dir/port" 2>/dev/null || true)
rm -f "$dir/port" "$dir/url"
# PostgreSQL refuses to run as root: as root (CI containers), the server
# runs as the postgres user (or nobody), owning DIR.
as=()
if [ "$(id -u)" = 0 ]; then
  u=postgres
  id "$u" >/dev/null 2>&1 || u=nobody
  chown -R "$u" "$dir"
  chmod o+x "$(dirname "$dir")" 2>/dev/null || true
  as=(runuser -u "$u" --)
fi

if [ ! -f "$dir/data/PG_VERSION" ]; then
  "${as[@]}" "$PG_BIN/initdb" -D "$dir/data" -U trellis -A trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; exit 1; }
fi

# A port picked free can be taken before the server binds it: try a few.
for attempt in 1 2 3 4 5; do
  port=$want
  want=""
  [ -n "$port" ] || port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  # Small settings: tests run many at once on a small machine.
  if "${as[@]}" "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/pg.log" -w -t 60 -s \
      -o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$dir/sock -c shared_buffers=32MB -c max_connections=60 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" start; then
    echo "$port" >"$dir/port"
    break
  fi
  grep -q "could not bind\|Address already in use" "$dir/pg.log" 2>/dev/null || { tail -20 "$dir/pg.log" >&2; exit 1; }
done
[ -f "$dir/port" ] || { echo "pg_start: no free port" >&2; exit 1; }
"$PG_BIN/createdb" -h 127.0.0.1 -p "$port" -U trellis trellis 2>/dev/null || true
echo "postgresql://trellis@127.0.0.1:$port/trellis" >"$dir/url"
