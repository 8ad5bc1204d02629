"""`payouts devnode`: run the simulated bitcoind regtest node in this process until
SIGINT/SIGTERM. Prints the `PAYOUTS_BITCOIND_URL` to use, then serves."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from decimal import Decimal
from types import FrameType

from devnode.server import start_devnode
from devnode.txutil import amount_to_sats


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="payouts devnode",
        description="Simulated bitcoind regtest node (JSON-RPC over HTTP) with fault "
        "injection. See devnode/README.md.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=18443,
                        help="port (default 18443, regtest's RPC port; 0 picks a free one)")
    parser.add_argument("--rpcuser", default="payouts", help="RPC user (default payouts)")
    parser.add_argument("--rpcpassword", default="payouts",
                        help="RPC password (default payouts)")
    parser.add_argument("--wallet", default="hot",
                        help="wallet to create and load (default hot)")
    parser.add_argument("--fallbackfee", default="0.0002",
                        help="fee rate in BTC/kvB used when no fee_rate is given and no "
                        "estimate exists (default 0.0002, like -fallbackfee; 0 disables)")
    parser.add_argument("--premine", type=int, default=0,
                        help="blocks to mine to the wallet at start (101 gives it 50 spendable "
                        "BTC; default 0)")
    parser.add_argument("--no-full-rbf", action="store_true",
                        help="only replace transactions that signal BIP125 (pre-28 Core)")
    parser.add_argument("--log-level", default="INFO",
                        help="DEBUG logs one line per request (method, status, time)")
    return parser


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    fallback = amount_to_sats(Decimal(args.fallbackfee))
    devnode = start_devnode(args.host, args.port, args.rpcuser, args.rpcpassword, args.wallet,
                            fallback_fee_sat_kvb=fallback, full_rbf=not args.no_full_rbf)
    if args.premine > 0:
        with devnode.node.lock:
            wallet = devnode.node.wallets[args.wallet]
            devnode.node.mine(args.premine, wallet.new_key().script)
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    print(f"PAYOUTS_BITCOIND_URL={devnode.wallet_url}", flush=True)
    logging.getLogger("devnode").info(
        "devnode serving regtest JSON-RPC on http://%s:%s (wallet %s)", devnode.host,
        devnode.port, args.wallet)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        devnode.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
