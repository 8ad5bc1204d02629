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
from shared.core.claims import claim_for_worker, persist_signed_tx
from shared.core.models import Payout, PayoutEvent, Route
from shared.core.state_machine import create_payout, transition
from shared.infra.db import session_scope
from shared.infra.settings import get_settings
from shared.node import NodeClient
from shared.sending.automatic import build_and_sign
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


def test_worker_whose_lease_was_taken_over_cannot_persist_or_broadcast(node: NodeClient) -> None:
    settings = get_settings()
    payout_id = _approved_automatic_payout(50_000)
    with session_scope() as session:
        claim_a = claim_for_worker(session, payout_id, "A", lease_seconds=30)
    assert claim_a is not None
    signed_a = build_and_sign(node, settings, claim_a)  # A signs ... then stalls

    with session_scope() as session:  # A's lease runs out while it is stalled
        session.execute(
            update(Payout).where(Payout.id == payout_id).values(lease_until=Payout.created_at)
        )
    with session_scope() as session:
        claim_b = claim_for_worker(session, payout_id, "B", lease_seconds=30)
    assert claim_b is not None and claim_b.token != claim_a.token

    with session_scope() as session:  # A wakes up: its fenced persist must lose
        assert persist_signed_tx(session, claim_a, signed_a, actor="worker:A") is False
    signed_b = build_and_sign(node, settings, claim_b)
    with session_scope() as session:
        assert persist_signed_tx(session, claim_b, signed_b, actor="worker:B") is True

    with session_scope() as session:
        payout = session.get(Payout, payout_id)
        assert payout is not None and payout.state == "signed"
        assert payout.claimed_by == "worker:B"
        events = session.query(PayoutEvent).filter_by(payout_id=payout_id).all()
        assert [e.to_state for e in events][-1] == "signed"
    # A's transaction was never stored, so nothing can broadcast it; the node never saw it.
    assert node.get_mempool_entry(signed_a.txid) is None
    assert node.get_transaction(signed_a.txid) is None


def test_claim_token_mismatch_changes_nothing(node: NodeClient) -> None:
    payout_id = _approved_automatic_payout(40_000)
    with session_scope() as session:
        claim = claim_for_worker(session, payout_id, "A", lease_seconds=30)
    assert claim is not None
    with session_scope() as session:  # a second claim while the lease is live loses
        assert claim_for_worker(session, payout_id, "B", lease_seconds=30) is None
    with session_scope() as session:
        payout = session.get(Payout, payout_id)
        assert payout is not None and payout.claim_token == claim.token
