"""What the fee-bumping tests share (test_fee_bumping.py, test_bump_attacks.py): a hot wallet
with ten coins, batches paid at 2 sat/vB (the fallback: no estimate yet), and the ways those
tests look at the result. SQLite, fakeredis and the simulated node in-process.

Blocks that leave transactions out are mined with `generateblock` and an empty list, as on
Bitcoin Core."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

import fakeredis
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from cli.addresses import external_address
from cli.regtest_node import RegtestNode
from devnode.server import RunningDevnode
from shared.core.models import Payout, PayoutState, Route, Transaction, utcnow
from shared.infra.db import get_engine
from shared.infra.settings import get_settings, reset_settings_cache
from shared.node import NodeClient
from shared.recovery.confirmations import track_confirmations
from shared.sending.automatic import Result, run_batches
from tests.unit.shared.factories import make_payout, use_app_database

S = PayoutState
AMOUNT = 30_000
# The policy's BUMP_AFTER_BLOCKS in these tests.
BUMP_AFTER_BLOCKS = 2


def funded_node(devnode: RunningDevnode) -> RegtestNode:
    """A client of the devnode's hot wallet holding ten mature 50 BTC coins."""
    client = RegtestNode(devnode.wallet_url, timeout=10, read_retries=0)
    client.generate_to_address(110, client.get_new_address())
    return client


def bump_session(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Session]:
    """A migrated SQLite database; batches start at 2 sat/vB, then fees "jump"."""
    use_app_database(monkeypatch, tmp_path / "bumps.db")
    monkeypatch.setenv("PAYOUTS_FALLBACK_FEE_RATE_SAT_VB", "2")
    monkeypatch.setenv("PAYOUTS_BUMP_AFTER_BLOCKS", str(BUMP_AFTER_BLOCKS))
    monkeypatch.setenv("PAYOUTS_BATCH_WINDOW_SECONDS", "0")
    reset_settings_cache()
    with Session(get_engine(), expire_on_commit=False) as session:
        yield session


def approved(session: Session, count: int, *, amount: int = AMOUNT,
             destination: str | None = None) -> list[uuid.UUID]:  # fmt: skip
    """Approved automatic payouts of distinct amounts, oldest first."""
    ids = []
    for i in range(count):
        payout = make_payout(
            session, state=S.APPROVED, route=Route.AUTOMATIC, amount_sats=amount + i,
            destination=destination or external_address(), approved_at=utcnow(),
        )  # fmt: skip
        ids.append(payout.id)
    return ids


def run(node: NodeClient) -> Result:
    return run_batches(worker_name="w1", settings=get_settings(), node=node,
                       redis_client=fakeredis.FakeRedis())  # fmt: skip


def pay_batch(session: Session, node: NodeClient, count: int = 3, *,
              amount: int = AMOUNT) -> tuple[list[uuid.UUID], str]:  # fmt: skip
    """`count` approved payouts paid by one broadcast batch; returns them and its txid."""
    ids = approved(session, count, amount=amount)
    result = run(node)
    assert result.paid == count, result
    return ids, live_txid(session, ids)


def payouts(session: Session, ids: Iterable[uuid.UUID]) -> list[Payout]:
    session.expire_all()
    found = [session.get(Payout, pid) for pid in ids]
    return [p for p in found if p is not None]


def states(session: Session, ids: Iterable[uuid.UUID]) -> set[str]:
    return {p.state for p in payouts(session, ids)}


def live_txid(session: Session, ids: list[uuid.UUID]) -> str:
    """The one transaction version all of `ids` name now."""
    txids = set()
    for p in payouts(session, ids):
        assert p.tx_id is not None, f"payout {p.id} is {p.state} with no transaction"
        tx = session.get(Transaction, p.tx_id)
        assert tx is not None
        txids.add(tx.txid)
    assert len(txids) == 1, txids
    return txids.pop()


def tx_row(session: Session, txid: str) -> Transaction:
    session.expire_all()
    return session.execute(select(Transaction).where(Transaction.txid == txid)).scalar_one()


def stored_txids(session: Session) -> set[str]:
    session.expire_all()
    return set(session.execute(select(Transaction.txid)).scalars())


def fee_rate(node: NodeClient, txid: str) -> float:
    entry = node.get_mempool_entry(txid)
    assert entry is not None, f"{txid} is not in the mempool"
    return float(entry["fees"]["base"]) * 1e8 / int(entry["vsize"])


def mine_without_mempool(node: RegtestNode, blocks: int) -> None:
    """Blocks that leave every mempool transaction out (Core: generateblock with [])."""
    address = node.get_new_address()
    for _ in range(blocks):
        node.generate_block(address, [])


def confirm(node: RegtestNode, blocks: int = 3) -> None:
    """Mine `blocks` blocks and let the confirmation tracker look."""
    node.mine(blocks)
    track_confirmations(node, get_settings())
