#!/usr/bin/env bash
# Checks deploy/systemd/: the hardening each unit must carry, that every
# TRELLIS_* it or its example environment file sets is a flag the daemon
# accepts (its --help), and, where systemd-analyze exists, `verify` (no
# warning at all) and `security --offline` (exposure at most 3.0).
#   check_systemd.sh SOURCE_DIR SCHEDULER_BINARY WORKER_BINARY
set -uo pipefail
SRC=$1 SCHED=$2 WORKER=$3
D="$SRC/deploy/systemd"
pass=0 failed=0
check() { # description command...
  local what=$1; shift
  if "$@" >/dev/null 2>&1; then pass=$((pass + 1)); else failed=$((failed + 1)); echo "FAIL $what"; fi
}
has() { grep -qxF -- "$2" "$1"; }

# The flags a daemon accepts, as the TRELLIS_ variables they become.
env_names() { "$1" --help 2>&1 | grep -oE -- '--[a-z][a-z0-9-]*' | sort -u |
  sed 's/^--//; s/-/_/g; s/^/TRELLIS_/' | tr '[:lower:]' '[:upper:]'; }
SCHED_ENV=$(env_names "$SCHED")
WORKER_ENV=$(env_names "$WORKER")
check "the scheduler's --help yields TRELLIS_STATE" grep -qx TRELLIS_STATE <<<"$SCHED_ENV"
check "the worker's --help yields TRELLIS_POOL" grep -qx TRELLIS_POOL <<<"$WORKER_ENV"

for unit in trellis-scheduler.service trellis-worker@.service; do
  f="$D/$unit"
  check "$unit exists" test -f "$f"
  for line in DynamicUser=yes ProtectSystem=strict ProtectHome=yes NoNewPrivileges=yes \
              PrivateTmp=yes Restart=always CapabilityBoundingSet= SystemCallFilter=@system-service \
              SystemCallArchitectures=native RestrictNamespaces=yes ProtectKernelTunables=yes \
              ProtectControlGroups=yes LockPersonality=yes RestrictSUIDSGID=yes UMask=0077; do
    check "$unit: $line" has "$f" "$line"
  done
  check "$unit: StateDirectory=" grep -q '^StateDirectory=trellis/' "$f"
  check "$unit: RestrictAddressFamilies=" grep -q '^RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6' "$f"
  check "$unit: EnvironmentFile= under /etc/trellis" grep -q '^EnvironmentFile=/etc/trellis/' "$f"
  check "$unit: secrets as credentials" grep -q '^LoadCredential=' "$f"
done
check "the scheduler unit has no device access" has "$D/trellis-scheduler.service" PrivateDevices=yes
check "the worker template's pool is its instance" has "$D/trellis-worker@.service" Environment=TRELLIS_POOL=%i

# Every TRELLIS_ variable set is a flag of that daemon.
flags_ok() { # file allowed-names
  local bad
  bad=$(grep -oE '^#?(Environment=)?TRELLIS_[A-Z0-9_]+' "$1" | sed 's/^#//; s/^Environment=//' |
        sort -u | grep -vxF -f <(echo "$2") || true)
  [ -z "$bad" ] || { echo "  not a flag: $bad"; return 1; }
}
check "trellis-scheduler.service sets only flags" flags_ok "$D/trellis-scheduler.service" "$SCHED_ENV"
check "scheduler.env sets only flags" flags_ok "$D/scheduler.env" "$SCHED_ENV"
check "trellis-worker@.service sets only flags" flags_ok "$D/trellis-worker@.service" "$WORKER_ENV"
check "worker.env sets only flags" flags_ok "$D/worker.env" "$WORKER_ENV"

if command -v systemd-analyze >/dev/null; then
  t=$(mktemp -d)
  trap 'rm -rf "$t"' EXIT
  # verify wants the executables to exist: point ExecStart at the built ones.
  sed "s|^ExecStart=/usr/local/bin/trellis-scheduler|ExecStart=$(realpath "$SCHED")|" \
    "$D/trellis-scheduler.service" >"$t/trellis-scheduler.service"
  sed "s|^ExecStart=/usr/local/bin/trellis-worker|ExecStart=$(realpath "$WORKER")|" \
    "$D/trellis-worker@.service" >"$t/trellis-worker@.service"
  cp "$t/trellis-worker@.service" "$t/trellis-worker@gpu.service"
  out=$(cd "$t" && systemd-analyze verify --man=no ./trellis-scheduler.service ./trellis-worker@gpu.service 2>&1)
  check "systemd-analyze verify: no warning" test -z "$out"
  [ -z "$out" ] || echo "$out"
  for u in trellis-scheduler.service trellis-worker@gpu.service; do
    check "systemd-analyze security $u: exposure <= 3.0" \
      systemd-analyze security --offline=true --threshold=30 --no-pager "$t/$u"
  done
else
  echo "systemd-analyze not installed: the directive checks above only"
fi
echo "$pass passed, $failed failed"
[ "$failed" = 0 ]
