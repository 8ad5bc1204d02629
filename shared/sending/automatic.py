"""The automatic route: what one `process_payout` message does (docs/architecture.md §6).

lock → claim (CAS) → build + sign with the hot wallet → persist signed (CAS with the claim
token) → broadcast the persisted bytes. Each step is safe to repeat, so a redelivered or
duplicated message, or a worker killed at any line, can at worst delay a payout.
"""

from __future__ import annotations

import enum
import logging
import uuid
from dataclasses import dataclass

import redis
from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.core.claims import (
    Claim,
    SignedTx,
    claim_for_worker,
    fail_claim,
    persist_signed_tx,
    release_claim,
    worker_actor,
)
from shared.core.errors import PayoutNotFound
from shared.core.models import Payout, PayoutState, Route, Transaction, TxState, utcnow
from shared.core.state_machine import transition
from shared.infra.db import session_scope
from shared.infra.locks import payout_lock
from shared.infra.settings import Settings
from shared.node import NodeClient
from shared.node.client import DecodedTx
from shared.node.coin_locks import unlock_quietly
from shared.node.errors import InsufficientFunds, InvalidAddress, NodeError, NodeUnavailable
from shared.ops import metrics
from shared.sending.broadcasting import BroadcastOutcome, broadcast_persisted
from shared.sending.fees import choose_fee_rate_sat_vb
from shared.sending.payment_check import PaymentMismatch, check_against_wallet
from shared.sending.signature_check import check_signatures_cover_everything

log = logging.getLogger(__name__)
S = PayoutState


class Outcome(enum.StrEnum):
    BROADCAST = "broadcast"
    SIGNED_PENDING = "signed_pending"  # persisted; broadcast outcome unknown, resent later
    LOCKED_ELSEWHERE = "locked_elsewhere"
    NOT_CLAIMABLE = "not_claimable"
    LEASE_LOST = "lease_lost"
    RETRY = "retry"  # released back to `approved`; try again after a backoff
    FAILED = "failed"


@dataclass(frozen=True)
class Result:
    outcome: Outcome
    detail: str = ""
    txid: str | None = None


class BuildError(Exception):
    """Building the transaction failed in a way that says retry later (claim released)."""


def process_payout(
    payout_id: uuid.UUID,
    *,
    worker_name: str,
    settings: Settings,
    node: NodeClient,
    redis_client: redis.Redis,
) -> Result:
    with payout_lock(redis_client, payout_id, settings.lease_seconds) as held:
        if not held:
            metrics.record_claim_conflict(metrics.ClaimConflict.LOCK_NOT_ACQUIRED, redis_client)
            return Result(Outcome.LOCKED_ELSEWHERE)
        return _process_locked(payout_id, worker_name, settings, node)


def _process_locked(
    payout_id: uuid.UUID, worker_name: str, settings: Settings, node: NodeClient
) -> Result:
    actor = worker_actor(worker_name)
    with session_scope() as session:
        payout = session.get(Payout, payout_id)
        if payout is None or payout.route != Route.AUTOMATIC:
            return Result(Outcome.NOT_CLAIMABLE, "unknown payout or not automatic")
        if payout.state == S.SIGNED:
            # A previous holder persisted but never learned the broadcast outcome; help out.
            return _broadcast_payout_tx(session, payout, node, settings, actor)
        if payout.attempts >= settings.max_attempts and payout.state in (S.APPROVED, S.CLAIMED):
            # A poison payout: every claim so far ended in an error, or in a worker that died
            # holding it (the claimed case: only once its lease has run out).
            reason = f"gave up after {payout.attempts} attempts; last error: {payout.last_error}"
            expired = [] if payout.state == S.APPROVED else [Payout.lease_until < utcnow()]
            if transition(
                session,
                payout_id,
                expected=S(payout.state),
                target=S.FAILED,
                actor=actor,
                reason=reason,
                guards=expired,
                values={"last_error": reason, "lease_until": None},
            ):
                return Result(Outcome.FAILED, reason)

    with session_scope() as session:
        claim = claim_for_worker(session, payout_id, worker_name, settings.lease_seconds)
    if claim is None:
        metrics.record_claim_conflict(metrics.ClaimConflict.CAS_LOST)
        return Result(Outcome.NOT_CLAIMABLE, "claimed elsewhere or not approved")
    log.info("claimed payout", extra={"payout_id": str(payout_id), "worker": worker_name})

    try:
        signed = build_and_sign(node, settings, claim)
    except InsufficientFunds as exc:
        reason = f"hot wallet has insufficient funds: {exc.message}"
        with session_scope() as session:
            release_claim(session, claim, actor=actor, reason=reason, count_attempt=False)
        return Result(Outcome.RETRY, reason)
    except InvalidAddress as exc:
        reason = f"the node rejected the destination address: {exc.message}"
        with session_scope() as session:
            fail_claim(session, claim, actor=actor, reason=reason)
        return Result(Outcome.FAILED, reason)
    except (NodeError, BuildError) as exc:
        reason = f"could not build the transaction: {exc}"
        # An unreachable node is an outage, not a fault of this payout: waiting it out must
        # not use up the attempts that turn a poison payout into `failed`.
        outage = isinstance(exc, NodeUnavailable)
        with session_scope() as session:
            release_claim(session, claim, actor=actor, reason=reason, count_attempt=not outage)
        return Result(Outcome.RETRY, reason)

    with session_scope() as session:
        persisted = persist_signed_tx(session, claim, signed, actor=actor)
    if not persisted:
        # Our lease was taken over: these bytes were never stored, so they must never be sent.
        unlock_quietly(node, signed.inputs)
        metrics.record_claim_conflict(metrics.ClaimConflict.LEASE_LOST)
        return Result(Outcome.LEASE_LOST, "claim token no longer ours; not broadcasting")

    with session_scope() as session:
        payout = session.get(Payout, payout_id)
        if payout is None:  # payouts are never deleted; a real error, not a strippable assert
            raise PayoutNotFound(payout_id)
        return _broadcast_payout_tx(session, payout, node, settings, actor)


def build_and_sign(node: NodeClient, settings: Settings, claim: Claim) -> SignedTx:
    """create → fund (inputs locked) → sign → check it pays exactly what the payout says."""
    fee_rate = choose_fee_rate_sat_vb(node, settings)
    raw = node.create_raw_transaction({claim.destination: claim.amount_sats})
    funded = node.fund_raw_transaction(raw, fee_rate_sat_vb=fee_rate, lock_unspents=True)
    locked: list[str] = []
    try:
        locked = node.decode_raw_transaction(funded.hex).inputs
        signed_hex = node.sign_raw_transaction_with_wallet(funded.hex)
        decoded = node.decode_raw_transaction(signed_hex)
        _check_pays_exactly(node, signed_hex, decoded, claim)
    except BaseException:
        # Unsent, unpersisted: give the coins back so other payouts can use them.
        unlock_quietly(node, locked)
        raise
    return SignedTx(
        txid=decoded.txid, raw_hex=signed_hex, fee_sats=funded.fee_sats, inputs=decoded.inputs
    )


def _check_pays_exactly(
    node: NodeClient, signed_hex: str, decoded: DecodedTx, claim: Claim
) -> None:
    """The same rule the manual route applies to a signer's transaction: the payment, and
    nothing but change. A mismatch here would be a wallet bug; never sign past it."""
    try:
        check_signatures_cover_everything(signed_hex)
        with session_scope() as session:
            check_against_wallet(
                session, node, decoded.outputs, {claim.destination: claim.amount_sats}
            )
    except PaymentMismatch as exc:
        raise BuildError(f"refusing to sign the funded transaction: {exc.message}") from exc


def _broadcast_payout_tx(
    session: Session, payout: Payout, node: NodeClient, settings: Settings, actor: str
) -> Result:
    tx = session.execute(select(Transaction).where(Transaction.id == payout.tx_id)).scalar_one()
    if tx.state != TxState.SIGNED:
        return Result(Outcome.BROADCAST, "already broadcast", tx.txid)
    outcome = broadcast_persisted(
        session, node, tx, actor=actor, max_fee_rate_sat_vb=settings.max_fee_rate_sat_vb
    )
    if outcome in (BroadcastOutcome.SENT, BroadcastOutcome.ALREADY_KNOWN):
        return Result(Outcome.BROADCAST, outcome.value, tx.txid)
    if outcome in (BroadcastOutcome.DEAD, BroadcastOutcome.REJECTED):
        return Result(Outcome.FAILED, outcome.value, tx.txid)
    return Result(Outcome.SIGNED_PENDING, outcome.value, tx.txid)
