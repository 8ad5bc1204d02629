"""A worker's claim on a batch of payouts, and the all-or-nothing persist of the transaction that
pays them (docs/architecture.md §5.3, §5.4, §6).

One claim token and one lease cover every payout of a batch. The claim is one compare-and-set
per source state (`approved`, or `claimed` by a worker whose lease ran out); the persist is one
CAS `claimed -> signed` with the token whose row count must equal the batch size, else nothing
is written. So a batch in which even one payout was taken over is never stored, and bytes that
were never stored are never sent.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from shared.core.claims import SignedTx, persist_signed, worker_actor
from shared.core.claims import fee_shares as fee_shares  # re-exported: batches split fees
from shared.core.models import Payout, PayoutState, Route, Transaction, utcnow
from shared.core.state_machine import transition, transition_many

S = PayoutState


@dataclass(frozen=True)
class Member:
    """One payout of a batch, as it was when the batch claimed it."""

    payout_id: uuid.UUID
    destination: str
    amount_sats: int


@dataclass(frozen=True)
class BatchClaim:
    token: str
    holder: str
    lease_until: datetime
    members: tuple[Member, ...]  # oldest first: partial funding pays a prefix

    @property
    def payout_ids(self) -> list[uuid.UUID]:
        return [m.payout_id for m in self.members]

    def only(self, members: Sequence[Member]) -> BatchClaim:
        """The same claim narrowed to `members` (the others were released or failed)."""
        return BatchClaim(self.token, self.holder, self.lease_until, tuple(members))


@dataclass(frozen=True)
class SignedBatch:
    tx: SignedTx
    vouts: dict[uuid.UUID, int]
    fee_shares: dict[uuid.UUID, int]


def _claimable(now: datetime) -> list[object]:
    return [
        Payout.route == Route.AUTOMATIC,
        or_(
            Payout.state == S.APPROVED,
            # A worker died holding it: its lease ran out, so the claim is free to take.
            (Payout.state == S.CLAIMED)
            & (Payout.lease_until < now)
            & Payout.claimed_by.like("worker:%"),
        ),
    ]


def fail_exhausted(session: Session, *, worker_name: str, max_attempts: int, limit: int) -> int:
    """Fail poison payouts: every claim so far ended in an error, or in a worker that died
    holding it (a claimed one only once its lease ran out). How many were failed."""
    now = utcnow()
    rows = session.execute(
        select(Payout.id, Payout.state, Payout.attempts, Payout.last_error)
        .where(*_claimable(now), Payout.attempts >= max_attempts)  # type: ignore[arg-type]
        .limit(limit)
    ).all()
    failed = 0
    for payout_id, state, attempts, last_error in rows:
        reason = f"gave up after {attempts} attempts; last error: {last_error}"
        expired = [] if state == S.APPROVED else [Payout.lease_until < now]
        failed += transition(
            session,
            payout_id,
            expected=S(state),
            target=S.FAILED,
            actor=worker_actor(worker_name),
            reason=reason,
            guards=expired,
            values={"last_error": reason, "lease_until": None},
        )
    return failed


def claim_batch(
    session: Session,
    *,
    worker_name: str,
    lease_seconds: int,
    max_payouts: int,
    max_attempts: int,
) -> BatchClaim | None:
    """Claim up to `max_payouts` of the oldest claimable automatic payouts for one worker.

    Rows are read `FOR UPDATE SKIP LOCKED` (PostgreSQL; SQLite serializes writers anyway), so
    two batch runs never wait on, or claim, each other's rows. At most one payout per
    destination: bitcoind refuses a transaction that names an address twice, so the others
    wait for the next batch. None when there is nothing to claim.
    """
    now = utcnow()
    candidates = session.execute(
        select(Payout.id, Payout.destination, Payout.amount_sats, Payout.state)
        .where(*_claimable(now), Payout.attempts < max_attempts)  # type: ignore[arg-type]
        .order_by(Payout.created_at, Payout.id)
        # Some headroom, so a few repeated destinations do not shrink the batch.
        .limit(max_payouts * 2)
        .with_for_update(skip_locked=True)
    ).all()
    chosen: dict[str, tuple[uuid.UUID, int, str]] = {}
    for payout_id, destination, amount_sats, state in candidates:
        if destination not in chosen and len(chosen) < max_payouts:
            chosen[destination] = (payout_id, amount_sats, state)
    if not chosen:
        return None

    holder = worker_actor(worker_name)
    token = secrets.token_hex(16)
    lease_until = now + timedelta(seconds=lease_seconds)
    values = {
        "claimed_by": holder,
        "claim_token": token,
        "lease_until": lease_until,
        "attempts": Payout.attempts + 1,
    }
    approved = [pid for pid, _, state in chosen.values() if state == S.APPROVED]
    expired = [pid for pid, _, state in chosen.values() if state == S.CLAIMED]
    won = set(
        transition_many(
            session, approved, expected=S.APPROVED, target=S.CLAIMED, actor=holder,
            reason="claimed by worker for a batch", guards=[Payout.route == Route.AUTOMATIC],
            values=values,
        )
    )  # fmt: skip
    won |= set(
        transition_many(
            session, expired, expected=S.CLAIMED, target=S.CLAIMED, actor=holder,
            reason="lease expired; taken over by worker for a batch",
            guards=[Payout.route == Route.AUTOMATIC, Payout.lease_until < now,
                    Payout.claimed_by.like("worker:%")],
            values=values,
        )
    )  # fmt: skip
    members = tuple(
        Member(pid, destination, amount)
        for destination, (pid, amount, _) in chosen.items()
        if pid in won
    )
    if not members:
        return None
    return BatchClaim(token=token, holder=holder, lease_until=lease_until, members=members)


def release_members(
    session: Session,
    claim: BatchClaim,
    members: Sequence[Member],
    *,
    reason: str,
    count_attempt: bool,
) -> int:
    """Give payouts of the batch back (`claimed -> approved`) with why in `last_error`.

    A wait (no funds, the chain limit, the node down) must not use up the attempts that turn
    a poison payout into `failed`: pass count_attempt=False.
    """
    values: dict[str, object] = {
        "claimed_by": None,
        "claim_token": None,
        "lease_until": None,
        "last_error": reason,
    }
    if not count_attempt:
        values["attempts"] = Payout.attempts - 1
    return len(
        transition_many(
            session, [m.payout_id for m in members], expected=S.CLAIMED, target=S.APPROVED,
            actor=claim.holder, reason=reason, claim_token=claim.token, values=values,
        )
    )  # fmt: skip


def fail_members(session: Session, claim: BatchClaim, members: Sequence[Member], *,
                 reason: str) -> int:  # fmt: skip
    """`claimed -> failed` for payouts the node refuses on their own (nothing was sent)."""
    return len(
        transition_many(
            session, [m.payout_id for m in members], expected=S.CLAIMED, target=S.FAILED,
            actor=claim.holder, reason=reason, claim_token=claim.token,
            values={"last_error": reason, "lease_until": None},
        )
    )  # fmt: skip


def persist_batch(session: Session, claim: BatchClaim, signed: SignedBatch) -> Transaction | None:
    """Write-ahead for a batch, all or nothing (claims.persist_signed): None when even one
    member no longer carries the claim token; then nothing was stored."""
    return persist_signed(
        session,
        token=claim.token,
        actor=claim.holder,
        payout_ids=claim.payout_ids,
        tx=signed.tx,
        vouts=signed.vouts,
        fee_shares=signed.fee_shares,
    )
