"""Who may pay a payout: the claim, its lease, and the fenced persist of a signed transaction.

Both senders (a worker, a human with the manual route) claim through the same CAS on `approved`
(docs/architecture.md §5.3), so exactly one of them ever gets something to sign. The claim token
written by the claim is the fencing token checked when the signed transaction is persisted: a holder
whose lease was taken over cannot persist, and only persisted bytes are broadcast.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import case, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared.core.errors import InvalidState
from shared.core.models import Payout, PayoutState, Route, Transaction, TxState, utcnow
from shared.core.state_machine import transition, transition_many

S = PayoutState


def worker_actor(worker_name: str) -> str:
    return f"worker:{worker_name}"


def manual_actor(key_name: str) -> str:
    return f"manual:{key_name}"


def is_worker_holder(claimed_by: str | None) -> bool:
    return bool(claimed_by and claimed_by.startswith("worker:"))


@dataclass(frozen=True)
class Claim:
    payout_id: uuid.UUID
    token: str
    holder: str
    lease_until: datetime
    destination: str
    amount_sats: int
    attempts: int
    reserved_inputs: list[str] | None


class ClaimChanged(InvalidState):
    """The row does not carry the claim the caller expected (a real error, never an `assert`,
    so `python -O` cannot strip the guard)."""


def _load_claim(session: Session, payout_id: uuid.UUID, token: str) -> Claim:
    payout = session.execute(select(Payout).where(Payout.id == payout_id)).scalar_one()
    session.refresh(payout)
    if payout.claim_token != token:
        # Our CAS just wrote this token in this transaction; anything else is a broken invariant.
        raise ClaimChanged(
            f"payout {payout_id} does not carry the claim just won (state {payout.state!r}, "
            f"claimed by {payout.claimed_by})",
            current_state=payout.state,
        )
    return current_claim(payout)


def current_claim(payout: Payout) -> Claim:
    """The claim a `claimed` row currently carries; `ClaimChanged` if it carries none."""
    if not (
        payout.state == S.CLAIMED
        and payout.claim_token
        and payout.claimed_by
        and payout.lease_until
    ):
        raise ClaimChanged(
            f"payout {payout.id} is {payout.state!r} and carries no claim "
            f"(claimed by {payout.claimed_by}, lease until {payout.lease_until})",
            current_state=payout.state,
            allowed_from=[S.CLAIMED],
        )
    return Claim(
        payout_id=payout.id,
        token=payout.claim_token,
        holder=payout.claimed_by,
        lease_until=payout.lease_until,
        destination=payout.destination,
        amount_sats=payout.amount_sats,
        attempts=payout.attempts,
        reserved_inputs=payout.reserved_inputs,
    )


def _claim(
    session: Session,
    payout_id: uuid.UUID,
    *,
    holder: str,
    route: Route,
    lease_seconds: int,
    reasons: tuple[str, str],
) -> Claim | None:
    """CAS `approved -> claimed` on `route`, or take over an expired claim of the same kind.

    Only the same kind of holder can take over (a worker from a worker, a signer from a
    signer): the route guard already ensures it, the `claimed_by` prefix says it twice.
    """
    now = utcnow()
    token = secrets.token_hex(16)
    values = {
        "claimed_by": holder,
        "claim_token": token,
        "lease_until": now + timedelta(seconds=lease_seconds),
        "attempts": Payout.attempts + 1,
    }
    on_route = Payout.route == route
    same_kind = Payout.claimed_by.like(holder.split(":", 1)[0] + ":%")
    claim_reason, takeover_reason = reasons
    won = transition(
        session,
        payout_id,
        expected=S.APPROVED,
        target=S.CLAIMED,
        actor=holder,
        reason=claim_reason,
        guards=[on_route],
        values=values,
    ) or transition(
        session,
        payout_id,
        expected=S.CLAIMED,
        target=S.CLAIMED,
        actor=holder,
        reason=takeover_reason,
        guards=[on_route, same_kind, Payout.lease_until < now],
        values=values,
    )
    return _load_claim(session, payout_id, token) if won else None


def claim_for_worker(
    session: Session, payout_id: uuid.UUID, worker_name: str, lease_seconds: int
) -> Claim | None:
    """Claim an automatic payout for a worker, or take over a worker claim whose lease expired.

    None means someone else holds it (or it is not in a claimable state): do nothing.
    """
    return _claim(
        session,
        payout_id,
        holder=worker_actor(worker_name),
        route=Route.AUTOMATIC,
        lease_seconds=lease_seconds,
        reasons=("claimed by worker", "lease expired; taken over by worker"),
    )


def claim_for_manual(
    session: Session, payout_id: uuid.UUID, key_name: str, lease_seconds: int
) -> Claim | None:
    """Claim a manual-route payout for a human signer, or take over an expired manual claim.

    A takeover's PSBT reuses the reserved inputs, so the two PSBTs conflict and at most one
    can confirm.
    """
    return _claim(
        session,
        payout_id,
        holder=manual_actor(key_name),
        route=Route.MANUAL,
        lease_seconds=lease_seconds,
        reasons=("claimed for manual signing", "manual claim expired; taken over"),
    )


def reserve_inputs(session: Session, claim: Claim, outpoints: list[str]) -> bool:
    """Record the inputs a manual PSBT spends (not a state change; fenced by the token)."""
    result = session.execute(
        update(Payout)
        .where(Payout.id == claim.payout_id, Payout.claim_token == claim.token)
        .values(reserved_inputs=outpoints)
        .returning(Payout.id)
        .execution_options(synchronize_session=False)
    )
    return result.first() is not None


def release_claim(
    session: Session, claim: Claim, *, actor: str, reason: str, count_attempt: bool = True
) -> bool:
    """Give the payout back (`claimed -> approved`), recording why in `last_error`."""
    values: dict[str, object] = {
        "claimed_by": None,
        "claim_token": None,
        "lease_until": None,
        "last_error": reason,
    }
    if not count_attempt:
        values["attempts"] = Payout.attempts - 1
    return transition(
        session,
        claim.payout_id,
        expected=S.CLAIMED,
        target=S.APPROVED,
        actor=actor,
        reason=reason,
        claim_token=claim.token,
        values=values,
    )


def fail_claim(session: Session, claim: Claim, *, actor: str, reason: str) -> bool:
    """`claimed -> failed`: nothing was or will be sent; a human must look (reason kept)."""
    return transition(
        session,
        claim.payout_id,
        expected=S.CLAIMED,
        target=S.FAILED,
        actor=actor,
        reason=reason,
        claim_token=claim.token,
        values={"last_error": reason, "lease_until": None},
    )


@dataclass(frozen=True)
class SignedTx:
    txid: str
    raw_hex: str
    fee_sats: int
    inputs: list[str]
    vsize: int | None = None


def persist_signed(
    session: Session,
    *,
    token: str,
    actor: str,
    payout_ids: Sequence[uuid.UUID],
    tx: SignedTx,
    vouts: Mapping[uuid.UUID, int] | None = None,
    fee_shares: Mapping[uuid.UUID, int] | None = None,
) -> Transaction | None:
    """Write-ahead for both senders: store the signed bytes and CAS every payout it pays
    `claimed -> signed` with the claim token (one statement), each with its output index and
    fee share.

    All in one SAVEPOINT: unless the CAS moved exactly `payout_ids` (a lease was taken over,
    for even one of a batch), it is rolled back and nothing is stored. None means exactly
    that: the caller must unlock the inputs and must not broadcast.
    """
    with session.begin_nested() as savepoint:
        row = Transaction(
            id=uuid.uuid4(),
            txid=tx.txid,
            raw_hex=tx.raw_hex,
            fee_sats=tx.fee_sats,
            vsize=tx.vsize,
            inputs=tx.inputs,
            state=TxState.SIGNED,
        )
        session.add(row)
        try:
            session.flush()
        except IntegrityError:
            # These exact bytes are already stored (a repeated persist): not a new claim win.
            savepoint.rollback()
            return None
        values: dict[str, object] = {"tx_id": row.id, "lease_until": None, "last_error": None}
        if vouts:
            values["vout"] = case(dict(vouts), value=Payout.id)
        if fee_shares:
            values["fee_share_sats"] = case(dict(fee_shares), value=Payout.id)
        moved = transition_many(
            session,
            payout_ids,
            expected=S.CLAIMED,
            target=S.SIGNED,
            actor=actor,
            reason=f"signed {tx.txid}",
            claim_token=token,
            values=values,
            log_fields={"txid": tx.txid},
        )
        if len(moved) != len(payout_ids):
            savepoint.rollback()
            return None
    return row


def persist_signed_tx(
    session: Session, claim: Claim, tx: SignedTx, *, actor: str, vout: int | None = None
) -> bool:
    """`persist_signed` for one payout. False means the lease was lost: the caller must unlock
    the inputs and must not broadcast."""
    return (
        persist_signed(
            session,
            token=claim.token,
            actor=actor,
            payout_ids=[claim.payout_id],
            tx=tx,
            vouts=None if vout is None else {claim.payout_id: vout},
            fee_shares={claim.payout_id: tx.fee_sats},
        )
        is not None
    )
