#!/usr/bin/env bash
# Starts a one-member etcd on free 127.0.0.1 ports for tests, and returns
# once it answers /health.
#
#   start-etcd.sh DIR [--fresh]
#
# DIR holds everything: data/ (the data folder), etcd.log, pid, ports
# ("client peer") and endpoint ("127.0.0.1:PORT", what clients read).
# When DIR/ports exists the same ports and data are used again (a restart
# of a stopped member); --fresh first stops whatever DIR/pid names and
# empties DIR. With TR_ETCD_TLS=CERTDIR (ca.pem, server.pem, server-key.pem)
# the member speaks TLS and asks clients for a certificate signed by ca.pem.
#
# Short raft timings (--heartbeat-interval 10 --election-timeout 100) make a
# fresh member ready in ~50 ms and a restarted one in ~150 ms (measured on
# loopback with etcd 3.4). Stop with stop-etcd.sh DIR.
set -euo pipefail

dir=${1:?usage: start-etcd.sh DIR [--fresh]}
here=$(cd "$(dirname "$0")" && pwd)
command -v etcd >/dev/null || { echo "start-etcd: etcd not found (apt-get install etcd-server)" >&2; exit 1; }

if [ "${2:-}" = --fresh ]; then
  [ -f "$dir/pid" ] && bash "$here/stop-etcd.sh" "$dir" --keep || true
  rm -rf "$dir"
fi
mkdir -p "$dir"

free_ports() {
  python3 - <<'PY'
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])
PY
}

scheme=http
tls_args=()
curl_args=()
if [ -n "${TR_ETCD_TLS:-}" ]; then
  scheme=https
  tls_args=(--cert-file "$TR_ETCD_TLS/server.pem" --key-file "$TR_ETCD_TLS/server-key.pem"
            --trusted-ca-file "$TR_ETCD_TLS/ca.pem" --client-cert-auth)
  curl_args=(--cacert "$TR_ETCD_TLS/ca.pem" --cert "$TR_ETCD_TLS/client.pem"
             --key "$TR_ETCD_TLS/client-key.pem")
fi

# A fresh pick of ports can race with another process taking one of them
# before etcd binds it: try again with new ports then.
for attempt in 1 2 3; do
  restart=0
  if [ -f "$dir/ports" ]; then
    read -r cport pport < "$dir/ports"
    restart=1
  else
    read -r cport pport < <(free_ports)
  fi
  state=new
  [ -d "$dir/data/member" ] && state=existing
  curl_url="$scheme://127.0.0.1:$cport"
  etcd --name n1 --data-dir "$dir/data" \
    --listen-client-urls "$curl_url" --advertise-client-urls "$curl_url" \
    --listen-peer-urls "http://127.0.0.1:$pport" \
    --initial-advertise-peer-urls "http://127.0.0.1:$pport" \
    --initial-cluster "n1=http://127.0.0.1:$pport" --initial-cluster-state "$state" \
    --heartbeat-interval 10 --election-timeout 100 \
    --log-level warn --logger zap "${tls_args[@]}" \
    </dev/null >>"$dir/etcd.log" 2>&1 &
  pid=$!
  echo "$pid" > "$dir/pid"
  for _ in $(seq 1 250); do
    if ! kill -0 "$pid" 2>/dev/null; then
      break
    fi
    if curl -sf "${curl_args[@]}" "$curl_url/health" 2>/dev/null | grep -q '"health":"true"'; then
      echo "$cport $pport" > "$dir/ports"
      echo "127.0.0.1:$cport" > "$dir/endpoint"
      exit 0
    fi
    sleep 0.04
  done
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$dir/pid"
  if [ "$restart" = 1 ]; then
    break
  fi
done
echo "start-etcd: etcd did not become healthy; its log:" >&2
tail -n 30 "$dir/etcd.log" >&2
exit 1
