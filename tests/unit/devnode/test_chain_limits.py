"""The mempool's ancestor/descendant limits (txmempool.cpp's CalculateAncestorsAndCheckLimits
and the wallet's CheckPackageLimits) on hand-built mempools; the messages are Core 29's text
from its source."""

from __future__ import annotations

import pytest
from embit.script import Script
from embit.transaction import Transaction, TransactionInput, TransactionOutput

from devnode.chain import Mempool
from devnode.policy import (
    DEFAULT_LIMITS,
    ChainLimitError,
    Limits,
    ancestors_within_limits,
    check_chain_limits,
    mempool_parents,
)
from devnode.scripts import p2wpkh_script
from devnode.txutil import txid_of, vsize_of

P2WPKH = p2wpkh_script(b"\x02" + b"\x11" * 32)


def _tx(spends: list[tuple[str, int]], outputs: int = 1, tag: int = 0) -> Transaction:
    vin = [TransactionInput(bytes.fromhex(txid), n) for txid, n in spends]
    if not vin:  # a "confirmed" funding input, unique per tag
        vin = [TransactionInput(tag.to_bytes(32, "big"), 0)]
    vout = [TransactionOutput(10_000 + i, Script(P2WPKH)) for i in range(outputs)]
    return Transaction(version=2, vin=vin, vout=vout, locktime=tag)


def _chain(pool: Mempool, length: int, outputs: int = 1) -> list[str]:
    txids: list[str] = []
    for i in range(length):
        tx = _tx([(txids[-1], 0)] if txids else [], outputs, tag=i + 1)
        pool.add(tx, fee=200, height=0)
        txids.append(txid_of(tx))
    return txids


def _limits_of(pool: Mempool, tx: Transaction, limits: Limits = DEFAULT_LIMITS) -> set[str]:
    parents = mempool_parents(pool, tx, limits)
    return ancestors_within_limits(pool, parents, vsize_of(tx), 1, limits)


def test_a_26th_transaction_in_a_chain_has_too_many_ancestors() -> None:
    pool = Mempool()
    chain = _chain(pool, 24)
    assert _limits_of(pool, _tx([(chain[-1], 0)], tag=99)) == set(chain)  # the 25th: fine
    pool.add(_tx([(chain[-1], 0)], tag=99), fee=200, height=0)
    chain.append(txid_of(_tx([(chain[-1], 0)], tag=99)))
    with pytest.raises(ChainLimitError) as caught:
        _limits_of(pool, _tx([(chain[-1], 0)], tag=99))
    assert str(caught.value) == "too many unconfirmed ancestors [limit: 25]"


def test_the_first_ancestor_over_its_descendant_limit_is_named() -> None:
    pool = Mempool()
    chain = _chain(pool, 25, outputs=2)
    # Spending the 24th's other output: 24 ancestors are fine, but the root would get its
    # 26th descendant (what psbtbumpfee of the youngest runs into, counting the original).
    with pytest.raises(ChainLimitError) as caught:
        _limits_of(pool, _tx([(chain[-2], 1)], tag=99))
    assert str(caught.value) == f"too many descendants for tx {chain[0]} [limit: 25]"
    with pytest.raises(ChainLimitError) as possibly:
        check_chain_limits(pool, _tx([(chain[-2], 1)], tag=99), 141)
    assert str(possibly.value) == f"possibly too many descendants for tx {chain[0]} [limit: 25]"


def test_size_limits_are_worded_like_core() -> None:
    pool = Mempool()
    chain = _chain(pool, 3)
    sizes = [pool.entries[t].vsize for t in chain]
    child = _tx([(chain[-1], 0)], tag=99)
    small_desc = Limits(descendant_size_vb=sum(sizes) + vsize_of(child) - 1)
    with pytest.raises(ChainLimitError) as desc:
        _limits_of(pool, child, small_desc)
    assert str(desc.value) == (f"exceeds descendant size limit for tx {chain[0]} "
                               f"[limit: {small_desc.descendant_size_vb}]")
    small_anc = Limits(ancestor_size_vb=sum(sizes) + vsize_of(child) - 1)
    with pytest.raises(ChainLimitError) as anc:
        _limits_of(pool, child, small_anc)
    assert str(anc.value) == f"exceeds ancestor size limit [limit: {small_anc.ancestor_size_vb}]"
    assert _limits_of(pool, child) == set(chain)


def test_too_many_direct_parents() -> None:
    pool = Mempool()
    parents = [txid_of(_tx([], tag=i)) for i in range(1, 26)]
    for i in range(1, 26):
        pool.add(_tx([], tag=i), fee=200, height=0)
    with pytest.raises(ChainLimitError) as caught:
        mempool_parents(pool, _tx([(p, 0) for p in parents], tag=99), DEFAULT_LIMITS)
    assert str(caught.value) == "too many unconfirmed parents [limit: 25]"
    assert len(mempool_parents(pool, _tx([(p, 0) for p in parents[:24]], tag=99),
                               DEFAULT_LIMITS)) == 24


def test_ancestors_are_visited_in_cores_txid_order() -> None:
    # Two parents both at their descendant limit: Core reports the one that sorts first as a
    # uint256 (its bytes compared little-endian, i.e. the displayed hex reversed).
    pool = Mempool()
    roots: list[str] = []
    for tag in (1, 2):
        root = _tx([], outputs=25, tag=tag)
        pool.add(root, fee=200, height=0)
        roots.append(txid_of(root))
        for n in range(24):
            pool.add(_tx([(roots[-1], n)], tag=100 * tag + n), fee=200, height=0)
    child = _tx([(roots[0], 24), (roots[1], 24)], tag=999)
    first = min(roots, key=lambda t: bytes.fromhex(t)[::-1])
    with pytest.raises(ChainLimitError) as caught:
        _limits_of(pool, child)
    assert str(caught.value) == f"too many descendants for tx {first} [limit: 25]"


def test_children_follow_additions_and_removals() -> None:
    pool = Mempool()
    parent = _tx([], outputs=3, tag=1)
    pool.add(parent, fee=200, height=0)
    pid = txid_of(parent)
    kids = [_tx([(pid, n)], tag=10 + n) for n in (2, 0, 1)]
    for kid in kids:
        pool.add(kid, fee=200, height=0)
    assert pool.children(pid) == [txid_of(k) for k in kids]  # mempool order
    assert pool.descendant_totals(pid) == (4, sum(e.vsize for e in pool.entries.values()))
    pool.remove(txid_of(kids[1]))
    assert pool.children(pid) == [txid_of(kids[0]), txid_of(kids[2])]
    pool.remove(pid)  # mined: its children stay, and have no mempool parent now
    assert pool.children(pid) == [] and pool.parents(txid_of(kids[0])) == []
    pool.clear()
    assert pool.entries == {} and pool.spends == {} and pool.spenders_of == {}
