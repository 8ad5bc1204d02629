#!/bin/sh
# bitcoind entrypoint for docker compose: puts the RPC credentials into a config file, so the
# password is on no command line (`ps`, `docker inspect` of the command), then hands over to
# the image's own entrypoint (which adds -datadir and drops to the `bitcoin` user).
set -eu
: "${BITCOIN_RPC_USER:?set BITCOIN_RPC_USER}"
: "${BITCOIN_RPC_PASSWORD:?set BITCOIN_RPC_PASSWORD}"
conf_dir="${BITCOIN_DATA:-/home/bitcoin/.bitcoin}"
mkdir -p "$conf_dir"
umask 077
printf 'rpcuser=%s\nrpcpassword=%s\n' "$BITCOIN_RPC_USER" "$BITCOIN_RPC_PASSWORD" \
  > "$conf_dir/bitcoin.conf"
exec /entrypoint.sh "$@"
