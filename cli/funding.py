"""Funding a regtest hot wallet with many confirmed coins (demo, tests, benchmark)."""

from __future__ import annotations

from cli.regtest_node import RegtestNode

# Outputs per funding transaction: keeps each one a normal size (~8 kvB) at any coin count.
FAN_OUT_PER_TX = 250
COINBASE_MATURITY_HEIGHT = 101  # the first coinbase becomes spendable at this height


def fund_wallet(node: RegtestNode, coins: int, coin_sats: int) -> None:
    """Give the hot wallet `coins` confirmed coins of `coin_sats` each.

    The wallet picks confirmed coins before unconfirmed change, so with a coin per payout no
    payout waits on (or chains onto) another's change. Works on a fresh chain and on one that
    is already mined (a long-lived real bitcoind regtest).
    """
    mine_to = node.get_new_address()
    if node.get_block_count() < COINBASE_MATURITY_HEIGHT:
        node.generate_to_address(COINBASE_MATURITY_HEIGHT, mine_to)
    while node.get_balance_sats() < coins * coin_sats * 1.1:
        node.generate_to_address(10, mine_to)
    # Fan out in slices, mining each, so the next slice spends confirmed change.
    for start in range(0, coins, FAN_OUT_PER_TX):
        count = min(FAN_OUT_PER_TX, coins - start)
        node.send_many({node.get_new_address(): coin_sats for _ in range(count)})
        node.generate_to_address(1, mine_to)
