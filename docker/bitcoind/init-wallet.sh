#!/bin/sh
# One-shot: make sure the hot wallet exists and is loaded, now and after every restart of
# bitcoind. Idempotent: already loaded → nothing; on disk → load it; neither → create it
# (load_on_startup=true, so bitcoind loads it by itself from then on).
set -eu
wallet="${BITCOIN_WALLET:-hot}"
# BITCOIN_CLI: the tests substitute a fake node here.
cli() { "${BITCOIN_CLI:-/docker/cli.sh}" -rpcwait -rpcwaittimeout=120 "$@"; }

if cli listwallets | grep -q "\"$wallet\""; then
  echo "wallet $wallet already loaded"
elif cli listwalletdir | grep -q "\"name\": \"$wallet\""; then
  cli -named loadwallet filename="$wallet" load_on_startup=true >/dev/null
  echo "wallet $wallet loaded"
else
  cli -named createwallet wallet_name="$wallet" load_on_startup=true >/dev/null
  echo "wallet $wallet created"
fi
