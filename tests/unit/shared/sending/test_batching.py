"""The batcher: SQLite, fakeredis and the simulated node in-process (docs/architecture.md §6).

Each payment is judged by the node's ledger (`devnode_ledger`), never by our own rows.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import fakeredis
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.orm import Session

from cli.addresses import external_address
from cli.regtest_node import RegtestNode
from devnode.server import RunningDevnode
from shared.core.batch_claims import claim_batch, persist_batch
from shared.core.claims import fee_shares
from shared.core.models import Payout, PayoutEvent, PayoutState, Route, Transaction
from shared.infra.db import get_engine, session_scope
from shared.infra.settings import get_settings, reset_settings_cache
from shared.sending.automatic import Outcome, Result, run_batches
from shared.sending.batch_build import build_and_sign_batch
from tests.unit.shared.factories import make_payout, use_app_database

S = PayoutState


@pytest.fixture
def node(devnode: RunningDevnode) -> RegtestNode:
    client = RegtestNode(devnode.wallet_url, timeout=5)
    client.generate_to_address(101, client.get_new_address())
    return client


@pytest.fixture
def session(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Session]:
    use_app_database(monkeypatch, tmp_path / "b.db")
    with Session(get_engine(), expire_on_commit=False) as session:
        yield session


def batch_size(monkeypatch: pytest.MonkeyPatch, size: int) -> None:
    monkeypatch.setenv("PAYOUTS_BATCH_MAX_PAYOUTS", str(size))
    reset_settings_cache()


def approve(session: Session, count: int, amount: int = 20_000, destination: str | None = None
            ) -> list[uuid.UUID]:  # fmt: skip
    ids = []
    for _ in range(count):
        payout = make_payout(session, state=S.APPROVED, route=Route.AUTOMATIC, amount_sats=amount)
        payout.destination = destination or external_address()
        ids.append(payout.id)
        session.commit()
    return ids


def run(node: RegtestNode, name: str = "w1") -> Result:
    return run_batches(
        worker_name=name, settings=get_settings(), node=node, redis_client=fakeredis.FakeRedis()
    )


def payouts(session: Session, ids: list[uuid.UUID]) -> list[Payout]:
    session.expire_all()
    return [p for pid in ids if (p := session.get(Payout, pid)) is not None]


def ledger_count(node: RegtestNode, destination: str) -> int:
    return len(node.call("devnode_ledger", destination))


def test_one_transaction_pays_a_batch_each_payout_once_with_its_output_and_fee_share(
    session: Session, node: RegtestNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch_size(monkeypatch, 3)
    ids = approve(session, 5)
    result = run(node)
    assert (result.outcome, result.paid, result.batches) == (Outcome.BROADCAST, 5, 2)
    rows = payouts(session, ids)
    assert {p.state for p in rows} == {S.BROADCAST}
    by_tx: dict[uuid.UUID, list[Payout]] = {}
    for p in rows:
        assert p.tx_id is not None
        by_tx.setdefault(p.tx_id, []).append(p)
    # Oldest first: the first three share one transaction, the last two the next.
    assert sorted(len(v) for v in by_tx.values()) == [2, 3]
    assert rows[0].tx_id == rows[1].tx_id == rows[2].tx_id != rows[3].tx_id
    for tx_id, members in by_tx.items():
        tx = session.get(Transaction, tx_id)
        assert tx is not None and tx.vsize
        decoded = node.call("decoderawtransaction", tx.raw_hex)
        assert sum(p.fee_share_sats or 0 for p in members) == tx.fee_sats
        for p in members:
            out = decoded["vout"][p.vout]
            assert out["scriptPubKey"]["address"] == p.destination
            assert round(float(out["value"]) * 100_000_000) == p.amount_sats
        # One output per payout plus at most one change output.
        assert len(decoded["vout"]) in (len(members), len(members) + 1)
    for p in rows:
        assert ledger_count(node, p.destination) == 1
    assert node.list_lock_unspent() == []


def test_a_second_run_finds_nothing_and_pays_nothing_again(
    session: Session, node: RegtestNode
) -> None:
    ids = approve(session, 4)
    assert run(node).paid == 4
    again = run(node)
    assert (again.outcome, again.paid) == (Outcome.NOT_CLAIMABLE, 0)
    for p in payouts(session, ids):
        assert ledger_count(node, p.destination) == 1 and p.attempts == 1


def test_one_destination_appears_once_per_transaction_the_others_wait_for_the_next(
    session: Session, node: RegtestNode
) -> None:
    shared_destination = external_address()
    ids = approve(session, 3, destination=shared_destination)
    result = run(node)
    assert result.paid == 3 and result.batches == 3
    rows = payouts(session, ids)
    assert len({p.tx_id for p in rows}) == 3
    assert ledger_count(node, shared_destination) == 3


def test_funds_for_part_of_a_batch_pay_its_oldest_payouts_and_the_rest_wait(
    session: Session, node: RegtestNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    balance = node.get_balance_sats()
    # Each payout two fifths of the balance: two fit with fees, the third cannot.
    ids = approve(session, 3, amount=balance * 2 // 5)
    ids += approve(session, 1, amount=balance)  # can never fit with the others
    result = run(node)
    rows = payouts(session, ids)
    assert [p.state for p in rows[:2]] == [S.BROADCAST, S.BROADCAST]
    assert {p.state for p in rows[2:]} == {S.APPROVED}
    for waiting in rows[2:]:
        assert waiting.attempts == 0, "a wait for funds must not use up attempts"
        assert "insufficient funds" in (waiting.last_error or "")
    assert result.outcome == Outcome.RETRY
    assert node.list_lock_unspent() == []


def test_a_payout_the_node_refuses_fails_alone_and_the_rest_are_paid(
    session: Session, node: RegtestNode
) -> None:
    ids = approve(session, 3)
    dust = approve(session, 1, amount=200)[0]  # below P2WPKH dust: the wallet refuses it
    ids.insert(1, dust)
    run(node)
    rows = {p.id: p for p in payouts(session, ids)}
    assert rows[dust].state == S.FAILED
    assert "amount too small" in (rows[dust].last_error or "").lower()
    assert ledger_count(node, rows[dust].destination) == 0
    for pid in ids:
        if pid != dust:
            assert rows[pid].state == S.BROADCAST
            assert ledger_count(node, rows[pid].destination) == 1


def test_a_lease_taken_over_for_one_payout_aborts_the_whole_batch_persist(
    session: Session, node: RegtestNode
) -> None:
    ids = approve(session, 3)
    settings = get_settings()
    with session_scope() as s:
        claim = claim_batch(s, worker_name="A", lease_seconds=60, max_payouts=10, max_attempts=5)
    assert claim is not None and len(claim.members) == 3
    signed = build_and_sign_batch(node, settings, list(claim.members))
    # Another worker takes one payout over (its lease ran out while A was slow).
    with session_scope() as s:
        s.execute(
            Payout.__table__.update().where(Payout.id == ids[1]).values(claim_token="someone-else")
        )
    with session_scope() as s:
        assert persist_batch(s, claim, signed) is None
    with session_scope() as s:
        assert s.execute(select(Transaction)).first() is None
        assert {p.state for p in s.execute(select(Payout)).scalars()} == {S.CLAIMED}
        assert not s.execute(select(PayoutEvent).where(PayoutEvent.to_state == S.SIGNED)).first()
    for pid in ids:
        row = session.get(Payout, pid)
        assert row is not None and ledger_count(node, row.destination) == 0


def test_a_batch_claim_takes_expired_worker_claims_but_never_live_or_manual_ones(
    session: Session,
) -> None:
    from datetime import timedelta

    from shared.core.models import utcnow

    claimed = {"state": S.CLAIMED, "route": Route.AUTOMATIC}
    expired = make_payout(session, **claimed, claimed_by="worker:x", claim_token="t1",
                          lease_until=utcnow() - timedelta(seconds=1))  # fmt: skip
    live = make_payout(session, **claimed, claimed_by="worker:y", claim_token="t2",
                       lease_until=utcnow() + timedelta(seconds=60))  # fmt: skip
    manual = make_payout(session, state=S.APPROVED, route=Route.MANUAL)
    session.commit()
    with session_scope() as s:
        claim = claim_batch(s, worker_name="A", lease_seconds=60, max_payouts=10, max_attempts=5)
    assert claim is not None
    assert claim.payout_ids == [expired.id]
    assert {live.id, manual.id}.isdisjoint(claim.payout_ids)


@given(
    fee=st.integers(min_value=0, max_value=10_000_000),
    count=st.integers(min_value=1, max_value=400),
)
def test_fee_shares_add_up_to_the_fee_and_differ_by_at_most_one_sat(fee: int, count: int) -> None:
    ids = [uuid.UUID(int=i) for i in range(count)]
    shares = fee_shares(fee, ids)
    assert sum(shares.values()) == fee
    assert max(shares.values()) - min(shares.values()) <= 1
    assert list(shares.values()) == sorted(shares.values(), reverse=True)  # oldest first


def test_a_one_coin_wallet_at_the_chain_limit_waits_for_a_block_and_fails_nothing(
    session: Session, node: RegtestNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The real-node failure this fixes: one payout per transaction, each spending the change
    # of the one before, and bitcoind's wallet refusing past 25 unconfirmed ancestors (-4).
    batch_size(monkeypatch, 1)
    assert len(node.call("listunspent")) == 1  # one mature coinbase
    ids = approve(session, 30)
    result = run(node)
    rows = payouts(session, ids)
    sent = [p for p in rows if p.state == S.BROADCAST]
    waiting = [p for p in rows if p.state == S.APPROVED]
    assert len(sent) == 25 and len(waiting) == 5
    assert result.outcome == Outcome.RETRY
    assert all(p.attempts == 0 for p in waiting), "a wait must not use up attempts"
    # The run stopped at the first refusal: that payout carries the node's reason.
    reason = waiting[0].last_error or ""
    assert "unconfirmed-chain limit" in reason and "Unconfirmed UTXOs are available" in reason
    node.generate_to_address(1, node.get_new_address())
    assert run(node).paid == 5
    for p in payouts(session, ids):
        assert p.state == S.BROADCAST and ledger_count(node, p.destination) == 1


def test_with_batches_the_same_one_coin_wallet_pays_everything_at_once(
    session: Session, node: RegtestNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch_size(monkeypatch, 50)
    ids = approve(session, 120)
    result = run(node)
    assert (result.paid, result.batches) == (120, 3)
    for p in payouts(session, ids):
        assert ledger_count(node, p.destination) == 1
