#!/bin/sh
# Writes a throwaway CA and certificates signed by it into DIR, for tests that need TLS:
# ca.pem/ca.key, server.pem/server.key (127.0.0.1 and localhost), client.pem/client.key.
# Used by tests/cluster.rs (NATS with mutual TLS) and loadtest/tests/scenarios.rs (wss://).
set -eu
cd "$1"
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 1 -subj /CN=natter-test-ca 2>/dev/null
for pair in server:serverAuth client:clientAuth; do
  name=${pair%%:*}
  usage=${pair#*:}
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=%s\nbasicConstraints=CA:FALSE\n' "$usage" > "$name.ext"
  openssl req -newkey rsa:2048 -nodes -keyout "$name.key" -out "$name.csr" -subj "/CN=$name" 2>/dev/null
  openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -out "$name.pem" -days 1 \
    -extfile "$name.ext" 2>/dev/null
done
