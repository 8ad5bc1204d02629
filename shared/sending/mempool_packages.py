"""Mempool packages as miners see them (Bitcoin Core's block assembler picks by ancestor fee
rate: a transaction's fees plus its unconfirmed ancestors', over their size). Read from
`getmempoolentry` (`fees.ancestor`, `ancestorsize`, `spentby`); used by fee bumping to tell a
stuck transaction from one a descendant already carries, and to size a CPFP."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shared.node import NodeClient
from shared.node.amounts import btc_to_sats
from shared.node.errors import NodeError

# A package walk never goes deeper than the mempool's own chain limit.
MAX_DESCENDANTS = 25

Entry = dict[str, Any]


def effective_fee_rate(node: NodeClient, entry: Mapping[str, Any]) -> float:
    """The best ancestor fee rate of a package that contains this transaction: its own with its
    ancestors, or a descendant's with its ancestors (this one among them). Miners select by
    exactly that, so a child that pays enough already carries it."""
    best = ancestor_score(entry)
    for leaf in leaf_descendants(node, entry):
        best = max(best, ancestor_score(leaf[1]))
    return best


def ancestor_score(entry: Mapping[str, Any]) -> float:
    """Fees of the transaction and its unconfirmed ancestors over their size, in sat/vB."""
    return btc_to_sats(entry["fees"]["ancestor"]) / max(1, int(entry["ancestorsize"]))


def leaf_descendants(node: NodeClient, entry: Mapping[str, Any]) -> list[tuple[str, Entry]]:
    """The descendants that have no descendants of their own, with their mempool entries."""
    leaves: list[tuple[str, Entry]] = []
    seen: set[str] = set()
    todo = list(entry.get("spentby", []))
    while todo and len(seen) < MAX_DESCENDANTS:
        txid = todo.pop()
        if txid in seen:
            continue
        seen.add(txid)
        child = node.get_mempool_entry(txid)
        if child is None:
            continue
        if child.get("spentby"):
            todo.extend(child["spentby"])
        else:
            leaves.append((txid, child))
    return leaves


def package_rate_after(node: NodeClient, txid: str) -> float | None:
    """`txid`'s ancestor fee rate now (sat/vB, 2 decimals), or None if the node cannot say."""
    try:
        entry = node.get_mempool_entry(txid)
    except NodeError:
        return None
    return None if entry is None else round(ancestor_score(entry), 2)
