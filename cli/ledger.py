"""Reconciliation against the node's ledger: the exactly-once oracle (docs/architecture.md §13).

It reads the node's wallet, never our database, so it can catch what our DB got wrong.

For every payout: exactly one confirmed output of the exact amount to its destination; and
nothing else left the wallet (every outgoing output belongs to some payout). Uses
`listsinceblock`, which real bitcoind and the simulated node both answer.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from shared.node import NodeClient
from shared.node.amounts import btc_to_sats


@dataclass
class LedgerVerdict:
    paid_once: list[str] = field(default_factory=list)
    paid_twice: list[str] = field(default_factory=list)
    unpaid: list[str] = field(default_factory=list)
    stray_outputs: list[tuple[str, int]] = field(default_factory=list)


def outgoing_outputs(node: NodeClient, min_confirmations: int = 1) -> Counter[tuple[str, int]]:
    """(address, sats) -> how many confirmed wallet sends paid it."""
    listing = node.list_since_block(None)
    seen: set[tuple[str, int]] = set()
    paid: Counter[tuple[str, int]] = Counter()
    for entry in listing.get("transactions", []):
        if entry.get("category") != "send":
            continue
        if int(entry.get("confirmations", 0)) < min_confirmations:
            continue
        key = (entry["txid"], int(entry["vout"]))
        if key in seen:  # listsinceblock may list a send once per wallet-relevant view
            continue
        seen.add(key)
        sats = -btc_to_sats(entry["amount"])
        paid[(entry["address"], sats)] += 1
    return paid


def judge(
    node: NodeClient, payouts: dict[str, tuple[str, int]], min_confirmations: int = 1
) -> LedgerVerdict:
    """`payouts` maps payout id -> (destination, amount_sats); destinations must be unique."""
    paid = outgoing_outputs(node, min_confirmations)
    verdict = LedgerVerdict()
    expected: set[tuple[str, int]] = set()
    for payout_id, (address, sats) in payouts.items():
        expected.add((address, sats))
        count = paid.get((address, sats), 0)
        if count == 1:
            verdict.paid_once.append(payout_id)
        elif count > 1:
            verdict.paid_twice.append(payout_id)
        else:
            verdict.unpaid.append(payout_id)
    verdict.stray_outputs = [
        key for key in paid if key not in expected and not _is_mine(node, key[0])
    ]
    return verdict


def _is_mine(node: NodeClient, address: str) -> bool:
    # Funding fan-outs send to the wallet's own addresses; those never left the wallet.
    return bool(node.call("getaddressinfo", address).get("ismine"))
