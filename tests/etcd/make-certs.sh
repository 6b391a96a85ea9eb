#!/usr/bin/env bash
# Makes a throwaway CA and, signed by it, a server certificate for
# 127.0.0.1 and a client certificate, for etcd-over-TLS tests.
#
#   make-certs.sh DIR
#
# Writes DIR/ca.pem, DIR/server.pem, DIR/server-key.pem, DIR/client.pem,
# DIR/client-key.pem (P-256 keys, valid one day), the names start-etcd.sh
# reads from TR_ETCD_TLS.
set -euo pipefail

dir=${1:?usage: make-certs.sh DIR}
mkdir -p "$dir"
cd "$dir"
ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)

openssl req -x509 "${ec[@]}" -keyout ca-key.pem -out ca.pem -days 1 \
  -subj "/CN=trellis test CA" 2>/dev/null

sign() { # name extensions
  openssl req "${ec[@]}" -keyout "$1-key.pem" -out "$1.csr" -subj "/CN=trellis test $1" 2>/dev/null
  printf '%s\n' "$2" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca-key.pem -CAcreateserial \
    -out "$1.pem" -days 1 -extfile "$1.ext" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}
sign server "subjectAltName=IP:127.0.0.1
extendedKeyUsage=serverAuth"
sign client "extendedKeyUsage=clientAuth"
