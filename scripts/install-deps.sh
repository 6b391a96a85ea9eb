#!/usr/bin/env bash
# Installs the Debian 12 packages Trellis builds, tests and benchmarks with.
# Idempotent: asks apt only for what is missing. Needs root or sudo.
set -euo pipefail

PKGS=(
  build-essential cmake pkg-config
  libzmq3-dev liblua5.4-dev libmsgpack-dev libuv1-dev libcurl4-openssl-dev
  libsqlite3-dev libjansson-dev libssl-dev node-llhttp libcmocka-dev libunistring-dev
  libgrpc-dev protobuf-c-compiler libprotobuf-c-dev etcd-server etcd-client
  python3 curl procps
  python3-yaml unzip
  prometheus
  libpq-dev postgresql-15
)
# The deploy and Helm tests run node scripts and fetch helm and the
# Kubernetes schemas from npm. A node that brings its own npm (as NodeSource's
# does) is kept; otherwise Debian's nodejs and npm.
command -v node >/dev/null || PKGS+=(nodejs)
command -v npm >/dev/null || PKGS+=(npm)
# The peers of the benchmark (bench/run.sh), only when asked for.
if [ "${TRELLIS_BENCH_DEPS:-0}" = 1 ]; then
  PKGS+=(python3-distributed python3-celery python3-redis redis-server)
fi

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  SUDO=sudo
fi
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# Some of these packages ship system services (etcd-server, postgresql,
# redis-server, prometheus). The tests start their own copies on loopback, on
# free ports, so nothing of the system's may start or stay enabled: a
# policy-rc.d that refuses every start for the time of the install (unless
# the machine has one, as container images do), and the units the new
# packages enabled disabled again after it.
POLICY=/usr/sbin/policy-rc.d
own_policy=0
if [ ! -e "$POLICY" ]; then
  printf '#!/bin/sh\n# trellis install-deps: no service starts during the install\nexit 101\n' |
    $SUDO tee "$POLICY" >/dev/null
  $SUDO chmod 755 "$POLICY"
  own_policy=1
fi
remove_policy() { if [ "$own_policy" = 1 ]; then $SUDO rm -f "$POLICY"; fi; }
trap remove_policy EXIT
installed() { dpkg-query -W -f='${Package} ${Status}\n' | awk '/install ok installed/ { print $1 }' | sort; }
before=$(installed)
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
# The packages this install added, dependencies included (postgresql-common
# brings postgresql.service, not postgresql-15).
for p in $(comm -13 <(echo "$before") <(installed)); do
  for unit in $(dpkg -L "$p" 2>/dev/null | grep -E '^(/usr)?/lib/systemd/system/[^/@]+\.(service|timer)$' || true); do
    u=$(basename "$unit")
    if [ -n "$(find /etc/systemd/system -path "*.wants/$u" 2>/dev/null | head -1)" ]; then
      if [ -d /run/systemd/system ]; then $SUDO systemctl disable --now "$u" >/dev/null 2>&1 || true; fi
      # Without a running systemd (a container, a chroot) the links are the state.
      $SUDO find /etc/systemd/system -path "*.wants/$u" -delete 2>/dev/null || true
      echo "install-deps: $u (from $p) is left disabled: the tests start their own" >&2
    fi
  done
done
