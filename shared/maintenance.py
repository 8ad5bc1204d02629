"""Periodic recovery work run by beat on the `maintenance` queue (docs/architecture.md §6, last
paragraph).

Each job is idempotent and bounded per run, so overlapping runs or a crash mid-run are fine.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

import redis
from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from shared.broadcasting import (
    BroadcastOutcome,
    broadcast_persisted,
    chain_view,
    mark_dead,
    payouts_of,
    prove_dead,
)
from shared.db import session_scope
from shared.models import Payout, PayoutState, Route, Transaction, TxState, utcnow
from shared.node import NodeClient
from shared.settings import Settings
from shared.state_machine import transition

log = logging.getLogger(__name__)
S = PayoutState
ACTOR = "maintenance"

# Per run; the next run picks up the rest. Keeps one run well inside its schedule interval.
BATCH = 500
# A confirmed transaction is watched until this many confirmations past MIN_CONFIRMATIONS,
# so a reorg deeper than MIN_CONFIRMATIONS (rare, but regtest tests do it) is still noticed.
REORG_WATCH_EXTRA_CONFIRMATIONS = 6
# Between new blocks only a dropped mempool transaction can change anything; look this often.
RESCAN_WITHOUT_NEW_BLOCK_SECONDS = 30
SCANNED_TIP_KEY = "maintenance:confirmations:scanned-tip"
# With a backlog in the payouts queue, how many sweep windows an approved payout may sit
# before we assume its message was lost.
BACKLOG_PATIENCE = 10


def payouts_needing_a_worker(settings: Settings, idle_seconds: float | None = None) -> list[str]:
    """Automatic payouts that no live worker holds: approved and idle, or lease expired."""
    now = utcnow()
    idle_since = now - timedelta(seconds=idle_seconds or settings.sweep_after_seconds)
    with session_scope() as session:
        rows = session.execute(
            select(Payout.id)
            .where(
                Payout.route == Route.AUTOMATIC,
                or_(
                    (Payout.state == S.APPROVED) & (Payout.updated_at < idle_since),
                    (Payout.state == S.CLAIMED) & (Payout.lease_until < now),
                    # Signed but not yet sent: the worker's process_payout broadcasts it too.
                    (Payout.state == S.SIGNED) & (Payout.updated_at < idle_since),
                ),
            )
            .order_by(Payout.updated_at)
            .limit(BATCH)
        ).scalars()
        return [str(payout_id) for payout_id in rows]


def republish_unclaimed(
    settings: Settings,
    redis_client: redis.Redis,
    publish: Callable[[str], None],
    queue_backlog: int = 0,
) -> int:
    """Re-publish `process_payout` for payouts no worker holds, at most once per payout per
    SWEEP_AFTER_SECONDS.

    Without that limit a backlog feeds itself: payouts waiting behind a long queue look idle,
    each sweep adds another message for every one of them, and the queue grows faster than
    workers drain it. A Redis key per payout (SET NX EX) remembers the last re-publish, and
    while the queue holds messages an approved payout must wait BACKLOG_PATIENCE times longer
    before it counts as lost (its message is most likely still queued).
    """
    idle = settings.sweep_after_seconds * (BACKLOG_PATIENCE if queue_backlog > 0 else 1)
    published = 0
    for payout_id in payouts_needing_a_worker(settings, idle_seconds=idle):
        try:
            fresh = redis_client.set(
                f"sweep:{payout_id}", 1, nx=True, ex=settings.sweep_after_seconds
            )
        except redis.RedisError:
            fresh = True  # without Redis there is no broker either; publishing will tell
        if fresh:
            publish(payout_id)
            published += 1
    return published


def rebroadcast_signed(node: NodeClient, settings: Settings) -> dict[str, int]:
    """Resend the persisted bytes of every `signed` transaction (never re-sign)."""
    counts: dict[str, int] = {}
    with session_scope() as session:
        tx_ids = list(
            session.execute(
                select(Transaction.id)
                .join(Payout, Payout.tx_id == Transaction.id)
                .where(Transaction.state == TxState.SIGNED, Payout.state == S.SIGNED)
                .distinct()
                .limit(BATCH)
            ).scalars()
        )
    for tx_id in tx_ids:
        with session_scope() as session:
            tx = session.get(Transaction, tx_id)
            if tx is None or tx.state != TxState.SIGNED:
                continue
            outcome = broadcast_persisted(
                session, node, tx, actor=ACTOR, max_fee_rate_sat_vb=settings.max_fee_rate_sat_vb
            )
        counts[outcome.value] = counts.get(outcome.value, 0) + 1
    return counts


@dataclass
class ConfirmationReport:
    confirmed: int = 0
    reorged: int = 0
    dead: int = 0
    resent: int = 0
    skipped: bool = False


def track_confirmations(
    node: NodeClient, settings: Settings, redis_client: redis.Redis | None = None
) -> ConfirmationReport:
    """Move payouts to `confirmed` at MIN_CONFIRMATIONS, back on reorg, `failed` when dead.

    A scan costs one RPC per watched transaction, and confirmations only change when the tip
    does. With Redis given, a scan runs when the tip changed, or when the last one is older
    than RESCAN_WITHOUT_NEW_BLOCK_SECONDS (to notice a transaction dropped from the mempool).
    """
    report = ConfirmationReport()
    tip = node.get_best_block_hash()
    if redis_client is not None and _tip_already_scanned(redis_client, tip):
        report.skipped = True
        return report
    watch_until = settings.min_confirmations + REORG_WATCH_EXTRA_CONFIRMATIONS
    with session_scope() as session:
        tx_ids = list(
            session.execute(
                select(Transaction.id)
                .where(
                    or_(
                        Transaction.state == TxState.BROADCAST,
                        (Transaction.state == TxState.CONFIRMED)
                        & (Transaction.confirmations < watch_until),
                    )
                )
                .order_by(Transaction.updated_at)
                .limit(BATCH)
            ).scalars()
        )
    for tx_id in tx_ids:
        with session_scope() as session:
            tx = session.get(Transaction, tx_id)
            if tx is not None:
                _track_one(session, node, settings, tx, report)
    if redis_client is not None:
        _remember_scanned_tip(redis_client, tip)
    return report


def _tip_already_scanned(redis_client: redis.Redis, tip: str) -> bool:
    try:
        seen = redis_client.get(SCANNED_TIP_KEY)
    except redis.RedisError:
        return False
    return seen is not None and _text(seen) == tip


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _remember_scanned_tip(redis_client: redis.Redis, tip: str) -> None:
    with contextlib.suppress(redis.RedisError):  # next run simply scans again
        redis_client.set(SCANNED_TIP_KEY, tip, ex=RESCAN_WITHOUT_NEW_BLOCK_SECONDS)


def _track_one(
    session: Session,
    node: NodeClient,
    settings: Settings,
    tx: Transaction,
    report: ConfirmationReport,
) -> None:
    info = chain_view(node, tx.txid)
    confirmations = int(info.get("confirmations", 0))
    payout_ids = payouts_of(session, tx.id)
    if confirmations >= settings.min_confirmations:
        report.confirmed += _move_all(
            session, payout_ids, S.BROADCAST, S.CONFIRMED,
            f"{tx.txid} has {confirmations} confirmations",
        )  # fmt: skip
        _set_tx(session, tx, TxState.CONFIRMED, confirmations, info.get("blockhash"))
        return
    if tx.state == TxState.CONFIRMED:
        report.reorged += _move_all(
            session, payout_ids, S.CONFIRMED, S.BROADCAST,
            f"reorg: {tx.txid} now has {confirmations} confirmations",
        )  # fmt: skip
    if confirmations > 0:
        _set_tx(session, tx, TxState.BROADCAST, confirmations, info.get("blockhash"))
        return
    # Unconfirmed. Still in the mempool → wait. Otherwise either provably dead, or simply
    # dropped (node restart without mempool, reorg): resend the same bytes.
    if node.get_mempool_entry(tx.txid) is not None:
        _set_tx(session, tx, TxState.BROADCAST, 0, None)
        return
    proof = prove_dead(node, tx.txid, list(tx.inputs))
    if proof is not None:
        mark_dead(session, node, tx, proof, ACTOR)
        report.dead += 1
        return
    # Re-sending a `broadcast` row is the same call: it only moves rows that are still `signed`.
    outcome = broadcast_persisted(
        session, node, tx, actor=ACTOR, max_fee_rate_sat_vb=settings.max_fee_rate_sat_vb
    )
    if outcome in (BroadcastOutcome.SENT, BroadcastOutcome.ALREADY_KNOWN):
        report.resent += 1


def _move_all(
    session: Session,
    payout_ids: list[uuid.UUID],
    source: PayoutState,
    target: PayoutState,
    reason: str,
) -> int:
    """CAS each payout of one transaction; how many moved."""
    return sum(
        transition(session, pid, expected=source, target=target, actor=ACTOR, reason=reason)
        for pid in payout_ids
    )


def _set_tx(
    session: Session,
    tx: Transaction,
    state: TxState,
    confirmations: int,
    block_hash: str | None,
) -> None:
    session.execute(
        update(Transaction)
        .where(Transaction.id == tx.id)
        .values(
            state=state, confirmations=confirmations, block_hash=block_hash, updated_at=utcnow()
        )
    )


# Coins locked this long without a stored transaction or reservation are orphans. Twice the
# lease: a worker between funding and persisting holds its locks for at most about a lease.
ORPHAN_LOCK_AGE_FACTOR = 2
LOCK_FIRST_SEEN_KEY = "maintenance:locks:first-seen"


def release_orphaned_locks(node: NodeClient, settings: Settings, redis_client: redis.Redis) -> int:
    """Unlock wallet coins locked by a build that never got persisted.

    A fundrawtransaction whose reply was lost, or a worker killed between funding and
    persisting, leaves its coins locked until the node restarts; enough of those and the hot
    wallet looks empty. Protected: inputs of our unconfirmed stored transactions, and inputs
    reserved for a manual PSBT of a payout still in play. Anything else locked for longer than
    ORPHAN_LOCK_AGE_FACTOR leases is released. Unlocking never creates a transaction, so the
    worst a wrong guess can do is make two of our own transactions conflict — one then fails
    with a reason; nothing is paid twice.
    """
    now = utcnow().timestamp()
    locked = set(node.list_lock_unspent())
    first_seen = {_text(k): float(v) for k, v in redis_client.hgetall(LOCK_FIRST_SEEN_KEY).items()}
    gone = [outpoint for outpoint in first_seen if outpoint not in locked]
    if gone:
        redis_client.hdel(LOCK_FIRST_SEEN_KEY, *gone)
    new = {outpoint: now for outpoint in locked if outpoint not in first_seen}
    if new:
        redis_client.hset(LOCK_FIRST_SEEN_KEY, mapping=cast(Any, new))
    max_age = ORPHAN_LOCK_AGE_FACTOR * settings.lease_seconds
    old = {o for o in locked if now - first_seen.get(o, now) > max_age}
    orphans = sorted(old - _protected_outpoints())
    if orphans:
        node.unlock_unspent(orphans)
        redis_client.hdel(LOCK_FIRST_SEEN_KEY, *orphans)
        log.warning("released %d orphaned coin locks: %s", len(orphans), ", ".join(orphans))
    return len(orphans)


def _protected_outpoints() -> set[str]:
    with session_scope() as session:
        tx_inputs = session.execute(
            select(Transaction.inputs).where(
                Transaction.state.in_([TxState.SIGNED, TxState.BROADCAST])
            )
        ).scalars()
        reserved = session.execute(
            select(Payout.reserved_inputs).where(
                Payout.reserved_inputs.is_not(None),
                Payout.state.in_([S.APPROVED, S.CLAIMED, S.SIGNED]),
            )
        ).scalars()
        return {o for group in [*tx_inputs, *reserved] for o in (group or [])}
