"""The automatic route: the batcher (docs/architecture.md §6).

A `process_payout` message starts a batch run for the hot wallet, or joins the one running:

1. Redis lock `batch:<wallet>` (cuts contention only; the DB CAS is the guarantee). Not
   acquired: leave a "pending" mark for the holder and return at once (a joining message
   costs two Redis commands and no DB work).
2. Wait up to BATCH_WINDOW_SECONDS (from the oldest waiting approval) for more approvals, then
   claim up to BATCH_MAX_PAYOUTS of the oldest approved automatic payouts in one CAS.
3. Build and sign one transaction paying each of them once (shared/sending/batch_build.py).
4. Persist it all-or-nothing with the claim token; 5. broadcast the persisted bytes.
6. Loop while approved payouts remain (for half a lease at most), release the lock, and take
   the lock again if a message asked while it was held.

Waiting is not failing: no funds, coins at the unconfirmed-chain limit and node outages give
the claim back without using up attempts. Funds for part of a batch pay its oldest payouts. A
payout the node refuses on its own is failed alone and the rest are rebuilt without it.
"""

from __future__ import annotations

import enum
import logging
import time
import uuid
from dataclasses import dataclass

import redis
from sqlalchemy import func, select

from shared.core.batch_claims import (
    BatchClaim,
    Member,
    SignedBatch,
    claim_batch,
    fail_exhausted,
    fail_members,
    persist_batch,
    release_members,
)
from shared.core.models import Payout, PayoutState, Route, Transaction, utcnow
from shared.infra.db import session_scope
from shared.infra.locks import named_lock
from shared.infra.settings import Settings
from shared.node import NodeClient
from shared.node.coin_locks import unlock_quietly
from shared.node.errors import NodeError, NodeUnavailable
from shared.ops import metrics
from shared.sending import batch_signals
from shared.sending.batch_build import (
    BuildError,
    PayoutRefused,
    TooHeavy,
    WaitForCoins,
    build_and_sign_batch,
    fundable_now,
    payouts_at_fault,
)
from shared.sending.broadcasting import BroadcastOutcome, broadcast_persisted

log = logging.getLogger(__name__)
S = PayoutState
# Poison payouts failed per run at most (the next run fails the rest).
EXHAUSTED_PER_RUN = 500
# How often the window wait looks whether a full batch has gathered.
WINDOW_POLL_SECONDS = 0.1


class Outcome(enum.StrEnum):
    BROADCAST = "broadcast"
    SIGNED_PENDING = "signed_pending"  # persisted; broadcast outcome unknown, resent later
    LOCKED_ELSEWHERE = "locked_elsewhere"  # joined the batch run another worker holds
    NOT_CLAIMABLE = "not_claimable"  # nothing approved to pay
    LEASE_LOST = "lease_lost"
    RETRY = "retry"  # released back to `approved`; try again after a backoff
    FAILED = "failed"
    SCHEDULED = "scheduled"  # BATCH_INTERVAL_SECONDS > 0: the scheduled run pays it


@dataclass(frozen=True)
class Result:
    outcome: Outcome
    detail: str = ""
    txid: str | None = None
    paid: int = 0  # payouts persisted in this run (broadcast or awaiting a resend)
    batches: int = 0


def process_payout(
    payout_id: uuid.UUID,
    *,
    worker_name: str,
    settings: Settings,
    node: NodeClient,
    redis_client: redis.Redis,
) -> Result:
    """What one `process_payout(payout_id)` message does. The id only names why the message
    was sent: the run pays the oldest approved payouts, this one among them in its turn."""
    if settings.batch_interval_seconds > 0:
        return Result(Outcome.SCHEDULED, f"batches run every {settings.batch_interval_seconds} s")
    return run_batches(
        worker_name=worker_name, settings=settings, node=node, redis_client=redis_client
    )


def run_batches(
    *, worker_name: str, settings: Settings, node: NodeClient, redis_client: redis.Redis
) -> Result:
    """Start a batch run for the hot wallet, or join the one running."""
    signals = batch_signals.BatchSignals(redis_client, batch_signals.wallet_name(settings))
    signals.ask()
    rounds: list[Result] = []
    while True:
        with named_lock(redis_client, signals.lock_key, settings.lease_seconds) as held:
            if not held:
                metrics.record_claim_conflict(metrics.ClaimConflict.LOCK_NOT_ACQUIRED, redis_client)
                return _summary(rounds) if rounds else Result(Outcome.LOCKED_ELSEWHERE, "joined")
            # Whoever asked until now is covered: the claims below come after their approvals.
            signals.take_asked()
            result, more = _run_locked(worker_name, settings, node, signals)
        rounds.append(result)
        if result.outcome in (Outcome.RETRY, Outcome.LEASE_LOST):
            return _summary(rounds)
        if not (more or signals.take_asked()):
            summary = _summary(rounds)
            if summary.outcome == Outcome.NOT_CLAIMABLE:
                # The message's payout was paid (or taken) by an earlier run: a duplicate.
                metrics.record_claim_conflict(metrics.ClaimConflict.CAS_LOST, redis_client)
            return summary


def _summary(results: list[Result], failed: int = 0) -> Result:
    """One result for several batches: the last one's outcome, the counts added up."""
    worked = [r for r in results if r.batches] or results
    if not worked:
        if failed:
            return Result(Outcome.FAILED, f"{failed} payouts gave up after their attempts")
        return Result(Outcome.NOT_CLAIMABLE, "nothing approved")
    last = worked[-1]
    return Result(
        last.outcome, last.detail, last.txid, sum(r.paid for r in worked),
        sum(r.batches for r in worked),
    )  # fmt: skip


def _run_locked(
    worker_name: str, settings: Settings, node: NodeClient, signals: batch_signals.BatchSignals
) -> tuple[Result, bool]:
    """Batches back to back while approved payouts remain, for half a lease (the lock's TTL)
    at most. Returns the run's result and whether there may be more to pay."""
    deadline = time.monotonic() + settings.lease_seconds / 2
    with session_scope() as session:
        failed = fail_exhausted(
            session, worker_name=worker_name, max_attempts=settings.max_attempts,
            limit=EXHAUSTED_PER_RUN,
        )  # fmt: skip
    results: list[Result] = []
    while time.monotonic() < deadline:
        _wait_for_company(settings, deadline)
        # Approvals from here on publish a new message; earlier ones are in the claim below.
        signals.clear_wake()
        with session_scope() as session:
            claim = claim_batch(
                session, worker_name=worker_name, lease_seconds=settings.lease_seconds,
                max_payouts=settings.batch_max_payouts, max_attempts=settings.max_attempts,
            )  # fmt: skip
        if claim is None:
            return _summary(results, failed), False
        log.info("claimed a batch of %d payouts", len(claim.members),
                 extra={"payout_count": len(claim.members), "worker": claim.holder})  # fmt: skip
        results.append(_pay_batch(claim, settings, node))
        if results[-1].outcome in (Outcome.RETRY, Outcome.LEASE_LOST):
            return _summary(results, failed), False
    return _summary(results, failed), True


def _wait_for_company(settings: Settings, deadline: float) -> None:
    """Hold the batch open until BATCH_WINDOW_SECONDS have passed since the oldest waiting
    approval, or a full batch is waiting, whichever comes first."""
    window = settings.batch_window_seconds
    if window <= 0:
        return
    while time.monotonic() < deadline:
        with session_scope() as session:
            waiting, oldest = session.execute(
                select(func.count(), func.min(Payout.approved_at)).where(
                    Payout.route == Route.AUTOMATIC, Payout.state == S.APPROVED
                )
            ).one()
        if not waiting or waiting >= settings.batch_max_payouts or oldest is None:
            return
        if oldest.tzinfo is None:  # SQLite hands back naive UTC
            oldest = oldest.replace(tzinfo=utcnow().tzinfo)
        left = window - (utcnow() - oldest).total_seconds()
        if left <= 0:
            return
        time.sleep(min(left, WINDOW_POLL_SECONDS))


def _pay_batch(claim: BatchClaim, settings: Settings, node: NodeClient) -> Result:
    members = list(claim.members)
    signed: SignedBatch | None = None
    refused: list[str] = []
    while members and signed is None:
        try:
            signed = build_and_sign_batch(node, settings, members)
        except WaitForCoins as wait:
            try:
                fits = (
                    fundable_now(node, settings, members)
                    if len(members) > 1 and wait.smaller_may_fit
                    else []
                )
            except NodeError as exc:
                # The search for the part that fits talks to the node too: an outage here is
                # the same outage as while building, and must not leave the batch claimed.
                return _give_back(claim, members, exc)
            if not fits:
                _release(claim, members, wait.reason, count_attempt=False)
                return Result(Outcome.RETRY, wait.reason, batches=1)
            _release(claim, [m for m in members if m not in fits],
                     f"{wait.reason}; paying {len(fits)} of {len(members)} that fit first",
                     count_attempt=False)  # fmt: skip
            members = fits
        except TooHeavy as heavy:
            if len(members) == 1:
                _fail(claim, members, f"the payment alone is too large to send: {heavy}")
                return Result(Outcome.FAILED, str(heavy), batches=1)
            half = len(members) // 2
            _release(claim, members[half:], f"batch too heavy ({heavy}); sent in parts",
                     count_attempt=False)  # fmt: skip
            members = members[:half]
        except PayoutRefused as refusal:
            at_fault = members if len(members) == 1 else payouts_at_fault(node, settings, members)
            if not at_fault:
                _release(claim, members, f"could not build the transaction: {refusal.reason}",
                         count_attempt=True)  # fmt: skip
                return Result(Outcome.RETRY, refusal.reason, batches=1)
            _fail(claim, at_fault, refusal.reason if len(at_fault) == 1 else
                  f"the node refuses to pay this payout: {refusal.reason}")  # fmt: skip
            refused.append(refusal.reason)
            members = [m for m in members if m not in at_fault]
        except (NodeError, BuildError) as exc:
            return _give_back(claim, members, exc)
    if signed is None:
        return Result(Outcome.FAILED, "; ".join(refused), batches=1)
    return _persist_and_send(claim.only(members), signed, settings, node)


def _persist_and_send(
    claim: BatchClaim, signed: SignedBatch, settings: Settings, node: NodeClient
) -> Result:
    with session_scope() as session:
        row = persist_batch(session, claim, signed)
        row_id = row.id if row is not None else None
    if row_id is None:
        # A lease was taken over: these bytes were never stored, so they must never be sent.
        unlock_quietly(node, signed.tx.inputs)
        metrics.record_claim_conflict(metrics.ClaimConflict.LEASE_LOST)
        return Result(Outcome.LEASE_LOST, "claim token no longer ours; not broadcasting",
                      batches=1)  # fmt: skip
    count = len(claim.members)
    with session_scope() as session:
        tx = session.execute(select(Transaction).where(Transaction.id == row_id)).scalar_one()
        outcome = broadcast_persisted(
            session, node, tx, actor=claim.holder, max_fee_rate_sat_vb=settings.max_fee_rate_sat_vb
        )
    log.info(
        "batch %s: %d payouts, %d vB, fee %d sats: %s", signed.tx.txid, count, signed.tx.vsize,
        signed.tx.fee_sats, outcome.value,
        extra={"txid": signed.tx.txid, "payout_count": count, "outcome": outcome.value},
    )  # fmt: skip
    if outcome in (BroadcastOutcome.SENT, BroadcastOutcome.ALREADY_KNOWN):
        return Result(Outcome.BROADCAST, outcome.value, signed.tx.txid, count, 1)
    if outcome in (BroadcastOutcome.DEAD, BroadcastOutcome.REJECTED):
        return Result(Outcome.FAILED, outcome.value, signed.tx.txid, 0, 1)
    return Result(Outcome.SIGNED_PENDING, outcome.value, signed.tx.txid, count, 1)


def _give_back(claim: BatchClaim, members: list[Member], exc: Exception) -> Result:
    reason = f"could not build the transaction: {exc}"
    # An unreachable node is an outage, not a fault of these payouts: waiting it out must not
    # use up the attempts that turn a poison payout into `failed`.
    _release(claim, members, reason, count_attempt=not isinstance(exc, NodeUnavailable))
    return Result(Outcome.RETRY, reason, batches=1)


def _release(claim: BatchClaim, members: list[Member], reason: str, *, count_attempt: bool) -> None:
    with session_scope() as session:
        release_members(session, claim, members, reason=reason, count_attempt=count_attempt)


def _fail(claim: BatchClaim, members: list[Member], reason: str) -> None:
    with session_scope() as session:
        fail_members(session, claim, members, reason=reason)
