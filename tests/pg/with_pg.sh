#!/usr/bin/env bash
# Runs a command with a throwaway PostgreSQL (pg_start.sh) and its URL in
# TRELLIS_TEST_PG_URL; the server is stopped and its folder removed when the
# command ends, whatever its outcome.
#
#   with_pg.sh COMMAND [ARG...]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
d=$(mktemp -d "${TMPDIR:-/tmp}/trellis-pg-XXXXXX")
trap 'bash "$here/pg_stop.sh" "$d/pg" --rm; rm -rf "$d"' EXIT
bash "$here/pg_start.sh" "$d/pg"
TRELLIS_TEST_PG_URL=$(cat "$d/pg/url")
export TRELLIS_TEST_PG_URL
"$@"
