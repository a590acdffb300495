#!/usr/bin/env bash
# Signed server-API call (v2, HMAC-SHA256) with openssl and curl.
# Usage: NATTER_URL=http://127.0.0.1:8080 APP_KEY=... APP_SECRET=... ./sign.sh METHOD PATH [JSON_BODY]
set -euo pipefail
method=$1 path=$2 body=${3:-}
ts=$(date +%s)
nonce=$(openssl rand -hex 16)
body_hash=$(printf '%s' "$body" | openssl dgst -sha256 -hex | sed 's/^.* //')
signature=$(printf '%s\n%s\n%s\n%s\n%s' "$method" "$path" "$ts" "$nonce" "$body_hash" \
  | openssl dgst -sha256 -hmac "$APP_SECRET" -hex | sed 's/^.* //')
data=()
if [ -n "$body" ]; then data=(--data "$body"); fi
curl -sS -X "$method" "$NATTER_URL$path" \
  -H "App-Key: $APP_KEY" -H "Nonce: $nonce" -H "Timestamp: $ts" \
  -H "Signature: $signature" -H "Signature-Method: hmac-sha256" \
  -H "Content-Type: application/json" "${data[@]}"
