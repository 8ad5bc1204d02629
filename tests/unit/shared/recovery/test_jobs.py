"""Recovery jobs: the sweeper re-publishing unclaimed payouts, and the coin-lock job."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import fakeredis
import pytest
from sqlalchemy.orm import Session

from cli.regtest_node import RegtestNode
from devnode.server import start_devnode
from shared.core.models import PayoutState, Route, Transaction, TxState, utcnow
from shared.infra.db import get_engine
from shared.infra.settings import get_settings
from shared.node.amounts import btc_to_sats
from shared.recovery.coin_locks import LOCK_FIRST_SEEN_KEY, release_orphaned_locks
from shared.recovery.sweep import republish_unclaimed
from tests.unit.shared.factories import make_payout, use_app_database

S = PayoutState


@pytest.fixture
def session(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Session:
    use_app_database(monkeypatch, tmp_path / "m.db", PAYOUTS_SWEEP_AFTER_SECONDS="30")
    return Session(get_engine(), expire_on_commit=False)


def test_idle_automatic_payouts_are_republished_once_per_window(session: Session) -> None:
    idle = utcnow() - timedelta(minutes=5)
    stuck = make_payout(session, state=S.APPROVED, route=Route.AUTOMATIC, updated_at=idle)
    expired = make_payout(
        session, state=S.CLAIMED, route=Route.AUTOMATIC, updated_at=idle,
        claimed_by="worker:w1", claim_token="t", lease_until=idle,
    )  # fmt: skip
    make_payout(session, state=S.APPROVED, route=Route.AUTOMATIC)  # just approved: not idle
    make_payout(session, state=S.APPROVED, route=Route.MANUAL, updated_at=idle)  # humans' job
    redis_client = fakeredis.FakeRedis()
    published: list[str] = []

    first = republish_unclaimed(get_settings(), redis_client, published.append)
    second = republish_unclaimed(get_settings(), redis_client, published.append)

    assert first == 2 and sorted(published) == sorted([str(stuck.id), str(expired.id)])
    assert second == 0  # a backlog must not make the sweeper flood the queue
    redis_client.flushall()  # window over (or Redis lost its keys): publish again
    assert republish_unclaimed(get_settings(), redis_client, published.append) == 2


def test_a_queue_backlog_makes_the_sweeper_patient(session: Session) -> None:
    waited = utcnow() - timedelta(minutes=2)  # idle longer than the window, shorter than 10x
    make_payout(session, state=S.APPROVED, route=Route.AUTOMATIC, updated_at=waited)
    published: list[str] = []
    settings = get_settings()
    assert republish_unclaimed(settings, fakeredis.FakeRedis(), published.append, 50) == 0
    assert republish_unclaimed(settings, fakeredis.FakeRedis(), published.append, 0) == 1


@pytest.fixture
def node_with_coins() -> Iterator[tuple[RegtestNode, list[str]]]:
    """A simulated node whose wallet holds three confirmed 1 BTC coins (and the rest)."""
    with start_devnode(host="127.0.0.1", port=0) as devnode:
        node = RegtestNode(devnode.wallet_url)
        node.generate_to_address(101, node.get_new_address())
        node.send_many({node.get_new_address(): 100_000_000 for _ in range(3)})
        node.generate_to_address(1, node.get_new_address())
        # The three 1 BTC coins, not whichever coins listunspent happens to list first (a
        # 50 BTC coinbase spent as "1 BTC" would pay a fee bitcoind refuses).
        coins = [f"{u['txid']}:{u['vout']}" for u in node.list_unspent(min_conf=1)
                 if btc_to_sats(u["amount"]) == 100_000_000]  # fmt: skip
        assert len(coins) == 3, coins
        yield node, coins


def test_orphaned_coin_locks_are_released_but_protected_ones_stay(
    session: Session, node_with_coins: tuple[RegtestNode, list[str]]
) -> None:
    node, coins = node_with_coins
    orphan, in_stored_tx, reserved = coins
    node.lock_unspent(coins)
    session.add(Transaction(id=uuid.uuid4(), txid="ab" * 32, raw_hex="00", fee_sats=1,
                            inputs=[in_stored_tx], state=TxState.SIGNED))  # fmt: skip
    session.commit()
    make_payout(session, state=S.APPROVED, route=Route.MANUAL, reserved_inputs=[reserved])
    redis_client = fakeredis.FakeRedis()

    # First sighting only starts the clock: a build may be between fund and persist.
    assert release_orphaned_locks(node, get_settings(), redis_client) == 0
    long_ago = utcnow().timestamp() - 3600
    redis_client.hset(LOCK_FIRST_SEEN_KEY, mapping={o: long_ago for o in coins})

    assert release_orphaned_locks(node, get_settings(), redis_client) == 1
    assert sorted(node.list_lock_unspent()) == sorted([in_stored_tx, reserved])


def test_reserved_coins_a_node_restart_unlocked_are_locked_again(
    session: Session, node_with_coins: tuple[RegtestNode, list[str]]
) -> None:
    node, (in_play, spent, done) = node_with_coins
    make_payout(session, state=S.APPROVED, route=Route.MANUAL, reserved_inputs=[in_play])
    make_payout(session, state=S.CLAIMED, route=Route.MANUAL, reserved_inputs=[spent])
    make_payout(session, state=S.CONFIRMED, route=Route.MANUAL, reserved_inputs=[done])
    # The reserved coin of the claimed payout was spent meanwhile (say, its PSBT was
    # broadcast elsewhere): bitcoind would refuse to lock it, so it must be left alone.
    raw = node.create_raw_transaction({node.get_new_address(): 99_990_000}, [spent])
    node.send_raw_transaction(node.sign_raw_transaction_with_wallet(raw))
    assert node.list_lock_unspent() == []  # as after a node restart

    release_orphaned_locks(node, get_settings(), fakeredis.FakeRedis())

    assert node.list_lock_unspent() == [in_play]


def test_a_reserved_coin_spent_since_the_lookup_does_not_stop_the_others_being_locked(
    session: Session,
    node_with_coins: tuple[RegtestNode, list[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    node, (in_play, spent, _) = node_with_coins
    make_payout(session, state=S.APPROVED, route=Route.MANUAL, reserved_inputs=[in_play])
    make_payout(session, state=S.APPROVED, route=Route.MANUAL, reserved_inputs=[spent])
    raw = node.create_raw_transaction({node.get_new_address(): 99_990_000}, [spent])
    node.send_raw_transaction(node.sign_raw_transaction_with_wallet(raw))
    # The spend lands between the job's gettxout and its lockunspent: a stale "unspent".
    stale = {"value": 1}
    monkeypatch.setattr(node, "get_tx_out", lambda _outpoint, *_: stale)

    release_orphaned_locks(node, get_settings(), fakeredis.FakeRedis())

    assert node.list_lock_unspent() == [in_play]
