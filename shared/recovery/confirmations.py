"""Track confirmations: `broadcast` → `confirmed`, a reorg back to `broadcast`, a proven-dead
transaction → its payouts `failed` with the reason (docs/architecture.md §5.2)."""

from __future__ import annotations

import contextlib
import logging
import uuid
from dataclasses import dataclass

import redis
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from shared.core.models import PayoutState, Transaction, TxState
from shared.core.state_machine import transition_many, transition_tx
from shared.infra.db import session_scope
from shared.infra.settings import Settings
from shared.node import NodeClient
from shared.recovery.common import ACTOR, BATCH, as_text
from shared.sending import versions
from shared.sending.broadcasting import (
    BroadcastOutcome,
    DeadOutcome,
    broadcast_persisted,
    chain_view,
    mark_dead,
    payouts_of,
    prove_dead,
)

log = logging.getLogger(__name__)
S = PayoutState
# A confirmed transaction is watched until this many confirmations past MIN_CONFIRMATIONS,
# so a reorg deeper than MIN_CONFIRMATIONS (rare, but regtest tests do it) is still noticed.
REORG_WATCH_EXTRA_CONFIRMATIONS = 6
# Between new blocks only a dropped mempool transaction can change anything; look this often.
RESCAN_WITHOUT_NEW_BLOCK_SECONDS = 30
SCANNED_TIP_KEY = "maintenance:confirmations:scanned-tip"


@dataclass
class ConfirmationReport:
    confirmed: int = 0
    reorged: int = 0
    dead: int = 0
    requeued: int = 0
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
    return seen is not None and as_text(seen) == tip


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
    # A fee-bumped payment: whichever version is in a block is the one that counts.
    tx = versions.settle(session, node, tx, actor=ACTOR)
    info = chain_view(node, tx.txid)
    confirmations = int(info.get("confirmations", 0))
    seen = {"confirmations": confirmations, "block_hash": info.get("blockhash")}
    payout_ids = payouts_of(session, tx.id)
    # Every write below is a CAS from the state read here (transition_tx); the payouts move
    # only once their transaction did, so the two never disagree.
    state = TxState(tx.state)
    if confirmations >= settings.min_confirmations:
        if transition_tx(session, tx.id, expected=state, target=TxState.CONFIRMED, values=seen):
            report.confirmed += _move_all(
                session, payout_ids, S.BROADCAST, S.CONFIRMED,
                f"{tx.txid} has {confirmations} confirmations",
            )  # fmt: skip
        return
    if state == TxState.CONFIRMED:
        if not transition_tx(session, tx.id, expected=state, target=TxState.BROADCAST, values=seen):
            return
        report.reorged += _move_all(
            session, payout_ids, S.CONFIRMED, S.BROADCAST,
            f"reorg: {tx.txid} now has {confirmations} confirmations",
        )  # fmt: skip
        if confirmations > 0:
            return
        state = TxState.BROADCAST
    if confirmations > 0:
        transition_tx(session, tx.id, expected=state, target=TxState.BROADCAST, values=seen)
        return
    # Unconfirmed. Still in the mempool → wait. Otherwise either provably dead, or simply
    # dropped (node restart without mempool, reorg): resend the same bytes.
    if node.get_mempool_entry(tx.txid) is not None:
        transition_tx(
            session, tx.id, expected=state, target=TxState.BROADCAST,
            values={"confirmations": 0, "block_hash": None},
        )  # fmt: skip
        return
    proof = prove_dead(node, tx.txid, list(tx.inputs))
    if proof is not None:
        dead = mark_dead(session, node, tx, proof, ACTOR, settings.dead_depth)
        if dead == DeadOutcome.REQUEUED:
            report.requeued += 1
        elif dead == DeadOutcome.FAILED:
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
    """CAS the payouts of one transaction in one statement; how many moved."""
    moved = transition_many(
        session, payout_ids, expected=source, target=target, actor=ACTOR, reason=reason
    )
    return len(moved)
