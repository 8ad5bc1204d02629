#!/bin/sh
# bitcoin-cli against the compose bitcoind, the password passed on stdin (-stdinrpcpass) so
# it never shows in a process list or a healthcheck definition.
# Usage: cli.sh [bitcoin-cli options] <command> [args]   e.g. cli.sh -generate 101
set -eu
: "${BITCOIN_RPC_USER:?set BITCOIN_RPC_USER}"
: "${BITCOIN_RPC_PASSWORD:?set BITCOIN_RPC_PASSWORD}"
printf '%s\n' "$BITCOIN_RPC_PASSWORD" | exec bitcoin-cli -regtest \
  -rpcconnect="${BITCOIN_RPC_HOST:-127.0.0.1}" -rpcport=18443 \
  -rpcuser="$BITCOIN_RPC_USER" -stdinrpcpass "$@"
