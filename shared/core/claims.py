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

from sqlalchemy import case, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared.core.errors import InvalidState
from shared.core.models import (
    Payout,
    PayoutState,
    Route,
    Transaction,
    TransactionPayout,
    TxState,
    utcnow,
)
from shared.core.state_machine import transition, transition_many, transition_tx

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
        link_payouts(session, row.id, payout_ids, vouts, fee_shares)
    return row


def link_payouts(
    session: Session,
    tx_row_id: uuid.UUID,
    payout_ids: Sequence[uuid.UUID],
    vouts: Mapping[uuid.UUID, int] | None,
    fee_shares: Mapping[uuid.UUID, int] | None,
) -> None:
    """Record which payouts a stored transaction pays (`transaction_payouts`), one multi-row
    INSERT: the history that survives re-queues and fee bumps."""
    if not payout_ids:
        return
    session.execute(
        insert(TransactionPayout),
        [
            {"tx_id": tx_row_id, "payout_id": pid, "vout": (vouts or {}).get(pid),
             "fee_share_sats": (fee_shares or {}).get(pid)}
            for pid in payout_ids
        ],
    )  # fmt: skip


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


def persist_bump(
    session: Session,
    old: Transaction,
    new: SignedTx,
    vouts: Mapping[uuid.UUID, int],
    *,
    actor: str,
    reason: str,
) -> Transaction | None:
    """Write-ahead for a fee bump (docs/architecture.md §6), all or nothing in one SAVEPOINT: the
    old version `broadcast -> replaced` by compare-and-set, the new one stored `signed` with
    `replaces_txid`/`original_txid`, its payouts linked with their outputs and an even fee
    share, and the payouts (`broadcast -> broadcast`) moved to it with `reason` in the audit
    trail.

    None means another bump (or a confirmation) won the CAS, or the payouts moved on: nothing
    was stored and the caller must not broadcast. The new version's bytes were checked by the
    caller to spend every input of `old` (`fee_bumping.check_replacement`).
    """
    with session.begin_nested() as savepoint:
        if not transition_tx(session, old.id, expected=TxState.BROADCAST,
                             target=TxState.REPLACED, values={"last_error": None}):  # fmt: skip
            savepoint.rollback()
            return None
        row = Transaction(
            id=uuid.uuid4(), txid=new.txid, raw_hex=new.raw_hex, fee_sats=new.fee_sats,
            vsize=new.vsize, inputs=new.inputs, state=TxState.SIGNED,
            replaces_txid=old.txid, original_txid=old.family_txid,
        )  # fmt: skip
        session.add(row)
        try:
            session.flush()
        except IntegrityError:
            savepoint.rollback()  # these exact bytes are stored already
            return None
        ids = list(vouts)
        link_payouts(session, row.id, ids, vouts, fee_shares(new.fee_sats, ids))
        moved = move_payouts(session, old, row, actor=actor, reason=reason)
        if len(moved) != len(ids):
            savepoint.rollback()
            return None
    return row


def move_payouts(
    session: Session,
    source: Transaction,
    target: Transaction,
    *,
    actor: str,
    reason: str,
) -> list[uuid.UUID]:
    """CAS the payouts that name `source` (all `broadcast`) over to `target`, each with its
    output and fee share in `target` (from `transaction_payouts`). One UPDATE; the caller
    compares the count with what it expected."""
    links = session.execute(
        select(
            TransactionPayout.payout_id, TransactionPayout.vout, TransactionPayout.fee_share_sats
        ).where(TransactionPayout.tx_id == target.id)
    ).all()
    if not links:
        return []
    ids = [link.payout_id for link in links]
    values: dict[str, object] = {
        "tx_id": target.id,
        "vout": case({link.payout_id: link.vout for link in links}, value=Payout.id),
        "fee_share_sats": case(
            {link.payout_id: link.fee_share_sats for link in links}, value=Payout.id
        ),
    }
    return transition_many(
        session, ids, expected=S.BROADCAST, target=S.BROADCAST, actor=actor, reason=reason,
        guards=[Payout.tx_id == source.id], values=values, log_fields={"txid": target.txid},
    )  # fmt: skip


def fee_shares(fee_sats: int, payout_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, int]:
    """Split a transaction's fee evenly among the payouts it pays; the few sats that do not
    divide go to the oldest ones, so the shares always add up to the fee exactly.

    Even, not by output size: every payout gets the same service, and the inputs and change
    (most of a batch's size) are shared costs.
    """
    if not payout_ids:
        return {}
    share, rest = divmod(fee_sats, len(payout_ids))
    return {pid: share + (1 if i < rest else 0) for i, pid in enumerate(payout_ids)}
