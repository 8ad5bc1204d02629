"""One `process_payout` run end to end: SQLite, fakeredis and the simulated node in-process."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import fakeredis
import pytest
from sqlalchemy.orm import Session

from cli.addresses import external_address
from cli.regtest_node import RegtestNode
from devnode.server import RunningDevnode
from shared.core.models import Payout, PayoutState, Route
from shared.infra.db import get_engine
from shared.infra.locks import named_lock
from shared.infra.settings import get_settings
from shared.node import NodeClient
from shared.sending.automatic import Outcome, process_payout
from shared.sending.batch_signals import BatchSignals, wallet_name
from tests.unit.shared.factories import make_payout, use_app_database

S = PayoutState


@pytest.fixture
def node(devnode: RunningDevnode) -> RegtestNode:
    client = RegtestNode(devnode.wallet_url, timeout=2)
    client.generate_to_address(101, client.get_new_address())
    return client


@pytest.fixture
def session(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Session]:
    use_app_database(monkeypatch, tmp_path / "p.db")
    with Session(get_engine(), expire_on_commit=False) as session:
        yield session


def approved(session: Session, amount: int = 50_000) -> uuid.UUID:
    payout = make_payout(session, state=S.APPROVED, route=Route.AUTOMATIC, amount_sats=amount)
    payout.destination = external_address()
    session.commit()
    return payout.id


def run(payout_id: uuid.UUID, node: NodeClient, redis_client: fakeredis.FakeRedis) -> Outcome:
    return process_payout(
        payout_id, worker_name="w1", settings=get_settings(), node=node, redis_client=redis_client
    ).outcome


def reload(session: Session, payout_id: uuid.UUID) -> Payout:
    session.expire_all()
    payout = session.get(Payout, payout_id)
    assert payout is not None
    return payout


def test_pays_once_and_a_second_run_does_nothing(session: Session, node: NodeClient) -> None:
    payout_id = approved(session)
    redis_client = fakeredis.FakeRedis()
    assert run(payout_id, node, redis_client) == Outcome.BROADCAST
    assert run(payout_id, node, redis_client) == Outcome.NOT_CLAIMABLE
    payout = reload(session, payout_id)
    assert payout.state == S.BROADCAST and payout.attempts == 1
    assert len(node.call("devnode_ledger", payout.destination)) == 1


def test_a_payout_locked_by_another_worker_is_left_alone(
    session: Session, node: NodeClient
) -> None:
    payout_id = approved(session)
    redis_client = fakeredis.FakeRedis()
    lock_key = BatchSignals(redis_client, wallet_name(get_settings())).lock_key
    assert lock_key == "batch:hot"
    with named_lock(redis_client, lock_key, 30):
        assert run(payout_id, node, redis_client) == Outcome.LOCKED_ELSEWHERE
    assert reload(session, payout_id).state == S.APPROVED


def test_insufficient_funds_and_node_outages_wait_without_using_attempts(
    session: Session, node: NodeClient
) -> None:
    too_big = approved(session, amount=node.get_balance_sats() * 2)
    assert run(too_big, node, fakeredis.FakeRedis()) == Outcome.RETRY
    payout = reload(session, too_big)
    assert (payout.state, payout.attempts) == (S.APPROVED, 0)
    assert "insufficient funds" in (payout.last_error or "")

    payout_id = approved(session)
    node.call("devnode_set_latency", "fundrawtransaction", 5)  # longer than the 2 s timeout
    try:
        assert run(payout_id, node, fakeredis.FakeRedis()) == Outcome.RETRY
    finally:
        node.call("devnode_set_latency", "fundrawtransaction", 0)
    payout = reload(session, payout_id)
    assert (payout.state, payout.attempts) == (S.APPROVED, 0)
    assert "could not build" in (payout.last_error or "")


def test_a_payout_that_keeps_failing_ends_failed_with_the_reason(
    session: Session, node: NodeClient
) -> None:
    payout_id = approved(session)
    for _ in range(get_settings().max_attempts):
        node.call("devnode_fail_next", "signrawtransactionwithwallet", -4, "wallet broke", 1)
        assert run(payout_id, node, fakeredis.FakeRedis()) == Outcome.RETRY
    assert run(payout_id, node, fakeredis.FakeRedis()) == Outcome.FAILED
    payout = reload(session, payout_id)
    assert payout.state == S.FAILED and "wallet broke" in (payout.last_error or "")
    assert node.list_lock_unspent() == []  # every attempt gave its coins back


def test_a_payout_whose_workers_keep_dying_ends_failed(session: Session, node: NodeClient) -> None:
    from datetime import timedelta

    from shared.core.models import utcnow

    payout = make_payout(
        session,
        state=S.CLAIMED,
        route=Route.AUTOMATIC,
        claimed_by="worker:dead",
        claim_token="t",
        attempts=get_settings().max_attempts,
        lease_until=utcnow() + timedelta(seconds=30),
    )
    # While the last holder's lease runs, nobody may take it, not even to fail it.
    assert run(payout.id, node, fakeredis.FakeRedis()) == Outcome.NOT_CLAIMABLE
    payout.lease_until = utcnow() - timedelta(seconds=1)
    session.commit()
    assert run(payout.id, node, fakeredis.FakeRedis()) == Outcome.FAILED
    assert reload(session, payout.id).state == S.FAILED
