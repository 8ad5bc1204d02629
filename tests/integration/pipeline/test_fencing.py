"""A worker whose lease was taken over can neither persist nor broadcast (claim-token fencing).

Runs the worker steps in-process against real PostgreSQL and the node, so the test can pause
"worker A" exactly between signing and persisting — the moment a GC pause or a stalled VM
would hit in production.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import update

from cli.addresses import external_address
from cli.funding import fund_wallet
from cli.regtest_node import RegtestNode
from shared.core.batch_claims import BatchClaim, claim_batch, persist_batch
from shared.core.models import Payout, PayoutEvent, Route, Transaction
from shared.core.state_machine import create_payout, transition
from shared.infra.db import session_scope
from shared.infra.settings import get_settings
from shared.node import NodeClient
from shared.sending.batch_build import build_and_sign_batch
from tests.support.stack import COIN_SATS, node_for_tests


@pytest.fixture
def node(pg_db: str) -> Iterator[RegtestNode]:
    with node_for_tests() as (url, _devnode):
        client = RegtestNode(url)
        fund_wallet(client, coins=5, coin_sats=COIN_SATS)
        yield client


def _approved_automatic_payout(amount_sats: int) -> uuid.UUID:
    with session_scope() as session:
        payout = create_payout(
            session, destination=external_address(), amount_sats=amount_sats, created_by="t"
        )
        assert transition(
            session, payout.id, expected="awaiting_approval", target="approved", actor="t",
            values={"route": Route.AUTOMATIC},
        )  # fmt: skip
        return payout.id


def _claim(worker: str) -> BatchClaim | None:
    with session_scope() as session:
        return claim_batch(
            session, worker_name=worker, lease_seconds=30, max_payouts=10, max_attempts=5
        )


def _expire_leases(payout_ids: list[uuid.UUID]) -> None:
    with session_scope() as session:
        session.execute(
            update(Payout).where(Payout.id.in_(payout_ids)).values(lease_until=Payout.created_at)
        )


def test_worker_whose_lease_was_taken_over_cannot_persist_or_broadcast(node: NodeClient) -> None:
    settings = get_settings()
    payout_ids = [_approved_automatic_payout(50_000 + i) for i in range(3)]
    claim_a = _claim("A")
    assert claim_a is not None and sorted(claim_a.payout_ids) == sorted(payout_ids)
    signed_a = build_and_sign_batch(node, settings, list(claim_a.members))  # A signs, stalls

    _expire_leases(payout_ids)  # A's lease runs out while it is stalled
    claim_b = _claim("B")
    assert claim_b is not None and claim_b.token != claim_a.token

    with session_scope() as session:  # A wakes up: its fenced persist must lose
        assert persist_batch(session, claim_a, signed_a) is None
    signed_b = build_and_sign_batch(node, settings, list(claim_b.members))
    with session_scope() as session:
        assert persist_batch(session, claim_b, signed_b) is not None

    with session_scope() as session:
        for payout_id in payout_ids:
            payout = session.get(Payout, payout_id)
            assert payout is not None and payout.state == "signed"
            assert payout.claimed_by == "worker:B"
            events = session.query(PayoutEvent).filter_by(payout_id=payout_id).all()
            assert [e.to_state for e in events][-1] == "signed"
    # A's transaction was never stored, so nothing can broadcast it; the node never saw it.
    assert node.get_mempool_entry(signed_a.tx.txid) is None
    assert node.get_transaction(signed_a.tx.txid) is None


def test_one_payout_taken_over_aborts_the_whole_batch_persist(node: NodeClient) -> None:
    settings = get_settings()
    payout_ids = [_approved_automatic_payout(30_000 + i) for i in range(4)]
    claim_a = _claim("A")
    assert claim_a is not None and len(claim_a.members) == 4
    signed_a = build_and_sign_batch(node, settings, list(claim_a.members))

    _expire_leases(payout_ids[2:3])  # only one lease ran out; B takes just that payout
    claim_b = _claim("B")
    assert claim_b is not None and claim_b.payout_ids == payout_ids[2:3]

    with session_scope() as session:  # three of four still carry A's token: still all or nothing
        assert persist_batch(session, claim_a, signed_a) is None
    with session_scope() as session:
        assert session.query(Transaction).count() == 0
        states = {p.id: (p.state, p.claimed_by) for p in session.query(Payout).all()}
    assert states[payout_ids[2]] == ("claimed", "worker:B")
    assert {states[pid] for pid in payout_ids if pid != payout_ids[2]} == {("claimed", "worker:A")}
    assert node.get_transaction(signed_a.tx.txid) is None


def test_claim_token_mismatch_changes_nothing(node: NodeClient) -> None:
    payout_id = _approved_automatic_payout(40_000)
    with session_scope() as session:
        claim = claim_batch(
            session, worker_name="A", lease_seconds=30, max_payouts=10, max_attempts=5
        )
    assert claim is not None and claim.payout_ids == [payout_id]
    assert _claim("B") is None  # a second claim while the lease is live loses
    with session_scope() as session:
        payout = session.get(Payout, payout_id)
        assert payout is not None and payout.claim_token == claim.token
