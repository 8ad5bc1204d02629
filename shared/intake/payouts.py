"""Payout intake and approval: the business rules behind the HTTP API (docs/architecture.md §6,
§10).

Functions take a Session and never commit: the caller owns the transaction
(`shared.infra.unit_of_work`). `approve` takes the caller's `UnitOfWork` instead, because it
decides what must happen after the commit: for the automatic route it registers the publishing of
`process_payout` as an after-commit hook (docs/architecture.md §6), so no caller decides it. Every
state change goes through `shared.core.state_machine`; every refusal is a
`shared.core.errors.DomainError`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared.core.errors import DomainError, ErrorKind, InvalidState, PayoutNotFound
from shared.core.models import (
    IdempotencyKey,
    Payout,
    PayoutEvent,
    PayoutState,
    Route,
    Transaction,
    utcnow,
)
from shared.core.state_machine import create_payout, transition
from shared.core.validation import (
    ValidationError,
    validate_address,
    validate_amount,
    validate_idempotency_key,
    validate_metadata,
    validate_reason,
)
from shared.infra.settings import Settings, get_settings
from shared.infra.unit_of_work import UnitOfWork
from shared.sending import dispatch

__all__ = [
    "FourEyesViolation",
    "IdempotencyConflict",
    "InvalidState",
    "PayoutNotFound",
    "PsbtHandedOut",
]

log = logging.getLogger(__name__)

S = PayoutState

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
AUTOMATIC_BUDGET_WINDOW = timedelta(hours=24)
CANCELLABLE = (S.AWAITING_APPROVAL, S.APPROVED)
# Any constant works; it only has to be the same in every process that approves payouts.
_AUTOMATIC_BUDGET_LOCK_ID = 0x7061796F  # "payo"


class IdempotencyConflict(DomainError):
    """The client reused an idempotency key for a different request body."""

    def __init__(self, message: str) -> None:
        super().__init__("idempotency_key_reused", message, ErrorKind.INVALID)


class FourEyesViolation(DomainError):
    """Four-eyes is on and the approver is the key that created the payout."""

    def __init__(self, message: str) -> None:
        super().__init__("four_eyes", message, ErrorKind.FORBIDDEN)


class PsbtHandedOut(InvalidState):
    """A manual PSBT for this payout was handed out: cancelling would let it pay anyway."""

    def __init__(self, payout: Payout) -> None:
        super().__init__(
            f"cannot cancel payout {payout.id}: a PSBT spending {payout.reserved_inputs} was "
            "handed out for manual signing and may already be signed. Cancelled, it could still "
            "be broadcast and pay, and a re-issued payout would pay the destination twice. "
            "Leave it approved, or have a signer claim and pay it.",
            current_state=payout.state,
            allowed_from=CANCELLABLE,
        )


@dataclass(frozen=True)
class Page:
    items: list[Payout]
    next_cursor: str | None


# ---------------------------------------------------------------------------------------------
# Reading


def get_payout(session: Session, payout_id: uuid.UUID) -> Payout:
    # populate_existing: a CAS UPDATE bypasses the identity map, so a cached object could
    # show the state from before our own transition.
    payout = session.get(Payout, payout_id, populate_existing=True)
    if payout is None:
        raise PayoutNotFound(payout_id)
    return payout


def transaction_ids(session: Session, payouts: Sequence[Payout]) -> dict[uuid.UUID, str]:
    """payout id -> txid of its linked transaction, for the payouts that have one."""
    tx_ids = {p.tx_id for p in payouts if p.tx_id is not None}
    if not tx_ids:
        return {}
    rows = session.execute(
        select(Transaction.id, Transaction.txid).where(Transaction.id.in_(tx_ids))
    )
    by_tx = {row.id: row.txid for row in rows}
    return {p.id: by_tx[p.tx_id] for p in payouts if p.tx_id in by_tx}


def list_payouts(
    session: Session,
    state: str | None = None,
    limit: int = DEFAULT_PAGE_SIZE,
    cursor: str | None = None,
) -> Page:
    """Payouts oldest first, by (created_at, id). The cursor is opaque to clients; keyset
    pagination keeps pages stable while new payouts arrive (they sort after every cursor)."""
    if state is not None and state not in {s.value for s in S}:
        raise ValidationError(
            "state", f"unknown state {state!r}; one of {', '.join(s.value for s in S)}"
        )
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise ValidationError("limit", f"must be between 1 and {MAX_PAGE_SIZE}")
    stmt = select(Payout)
    if state is not None:
        stmt = stmt.where(Payout.state == state)
    if cursor is not None:
        after_at, after_id = decode_cursor(cursor)
        stmt = stmt.where(
            or_(
                Payout.created_at > after_at,
                and_(Payout.created_at == after_at, Payout.id > after_id),
            )
        )
    # One extra row tells us whether another page exists without a COUNT.
    rows = list(session.scalars(stmt.order_by(Payout.created_at, Payout.id).limit(limit + 1)))
    items = rows[:limit]
    next_cursor = encode_cursor(items[-1]) if len(rows) > limit else None
    return Page(items=items, next_cursor=next_cursor)


def encode_cursor(payout: Payout) -> str:
    raw = f"{_as_utc(payout.created_at).isoformat()}|{payout.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at_text, id_text = raw.split("|")
        return _as_utc(datetime.fromisoformat(at_text)), uuid.UUID(id_text)
    # OverflowError: a parseable timestamp whose UTC equivalent is outside years 1-9999.
    except (ValueError, UnicodeDecodeError, OverflowError) as exc:
        raise ValidationError(
            "cursor", "is not valid; pass next_cursor from a previous page unchanged"
        ) from exc


def _as_utc(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes (stored as UTC); PostgreSQL aware ones.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def list_events(session: Session, payout_id: uuid.UUID) -> list[PayoutEvent]:
    get_payout(session, payout_id)
    stmt = select(PayoutEvent).where(PayoutEvent.payout_id == payout_id).order_by(PayoutEvent.id)
    return list(session.scalars(stmt))


# ---------------------------------------------------------------------------------------------
# Creating


def request_fingerprint(destination: str, amount_sats: int, metadata: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of the (validated, normalised) request body."""
    canonical = json.dumps(
        {"destination": destination, "amount_sats": amount_sats, "metadata": metadata},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def create_payout_idempotent(
    session: Session,
    client_name: str,
    idempotency_key: str,
    destination: str,
    amount_sats: int,
    metadata: dict[str, Any] | None,
    *,
    settings: Settings | None = None,
) -> tuple[Payout, bool]:
    """Create a payout once per (client, idempotency key).

    Returns (payout, created). A retry with the same key and body returns the SAME payout
    with created=False; the same key with another body raises IdempotencyConflict. Input is
    validated first, so a bad request changes nothing.
    """
    settings = settings or get_settings()
    key = validate_idempotency_key(idempotency_key)
    destination = validate_address(destination, settings.network)
    amount = validate_amount(amount_sats, settings.max_payout_sats)
    clean_metadata = validate_metadata(metadata)
    fingerprint = request_fingerprint(destination, amount, clean_metadata)

    existing = _find_idempotency_key(session, client_name, key)
    if existing is not None:
        return _replay(session, existing, fingerprint), False
    try:
        # Savepoint: if a concurrent identical request wins the unique (client, key) index,
        # only our half-done insert is rolled back and the caller's session stays usable.
        with session.begin_nested():
            payout = create_payout(
                session,
                destination=destination,
                amount_sats=amount,
                created_by=client_name,
                metadata=clean_metadata,
            )
            session.add(
                IdempotencyKey(
                    client=client_name, key=key, fingerprint=fingerprint, payout_id=payout.id
                )
            )
    except IntegrityError:
        # PostgreSQL made our INSERT wait for the other transaction and failed it once that
        # committed; under READ COMMITTED this new statement sees the winner's row.
        existing = _find_idempotency_key(session, client_name, key)
        if existing is None:
            raise
        return _replay(session, existing, fingerprint), False
    return payout, True


def _find_idempotency_key(session: Session, client: str, key: str) -> IdempotencyKey | None:
    stmt = select(IdempotencyKey).where(IdempotencyKey.client == client, IdempotencyKey.key == key)
    return session.scalar(stmt)


def _replay(session: Session, record: IdempotencyKey, fingerprint: str) -> Payout:
    if record.fingerprint != fingerprint:
        raise IdempotencyConflict(
            "this Idempotency-Key was already used with a different request body; "
            "use a new key for a new payout"
        )
    return get_payout(session, record.payout_id)


# ---------------------------------------------------------------------------------------------
# Approving and cancelling


def approve(
    uow: UnitOfWork,
    payout_id: uuid.UUID,
    approver: str,
    *,
    settings: Settings | None = None,
) -> tuple[Payout, Route]:
    """CAS awaiting_approval -> approved, deciding the route. For the automatic route it
    registers publishing `process_payout` to run after the caller's `uow.commit()`: a worker
    must never see a message for an approval that could still roll back."""
    session = uow.session
    settings = settings or get_settings()
    payout = get_payout(session, payout_id)
    if payout.state != S.AWAITING_APPROVAL:
        raise InvalidState.for_action("approve", payout.state, [S.AWAITING_APPROVAL])
    if settings.four_eyes and approver == payout.created_by:
        raise FourEyesViolation(
            f"four-eyes approval is on: payout {payout_id} was created by {approver!r}, "
            "so another key must approve it"
        )
    now = utcnow()
    route = decide_route(session, payout.amount_sats, settings, now=now)
    approved = transition(
        session,
        payout_id,
        expected=S.AWAITING_APPROVAL,
        target=S.APPROVED,
        actor=approver,
        reason=f"approved for the {route.value} route",
        values={"approved_by": approver, "approved_at": now, "route": route.value},
    )
    if not approved:
        # Someone else approved or cancelled it between our read and our CAS.
        current = get_payout(session, payout_id).state
        raise InvalidState.for_action("approve", current, [S.AWAITING_APPROVAL])
    if route is Route.AUTOMATIC:
        uow.after_commit(lambda: publish_process_payout(payout_id))
    return get_payout(session, payout_id), route


def publish_process_payout(payout_id: uuid.UUID) -> None:
    """Ask a worker to pay an approved automatic payout; run only after the approval committed.

    A broker outage does not undo the approval: the beat sweeper re-publishes unclaimed
    automatic approvals, so a lost message delays this payout but does not lose it.
    """
    try:
        dispatch.enqueue_process_payout(payout_id)
    except Exception as exc:
        log.warning(
            "approved payout %s but could not publish process_payout (%s: %s); the sweeper "
            "will re-publish it",
            payout_id,
            type(exc).__name__,
            exc,
            extra={"payout_id": str(payout_id)},
        )


def decide_route(
    session: Session, amount_sats: int, settings: Settings, *, now: datetime | None = None
) -> Route:
    """Automatic when automatic processing is on, the payout is within AUTO_MAX_SATS and the
    automatic payouts approved in the last 24 h plus this one stay within AUTO_DAILY_SATS."""
    if not settings.automatic_processing or amount_sats > settings.auto_max_sats:
        return Route.MANUAL
    now = now or utcnow()
    _serialize_automatic_budget(session)
    # Cancelled payouts never left the wallet (cancel is only possible before a claim), so
    # they do not use up the budget; every other automatic approval might have.
    spent = session.scalar(
        select(func.coalesce(func.sum(Payout.amount_sats), 0)).where(
            Payout.route == Route.AUTOMATIC,
            Payout.approved_at >= now - AUTOMATIC_BUDGET_WINDOW,
            Payout.state != S.CANCELLED,
        )
    )
    return (
        Route.AUTOMATIC
        if int(spent or 0) + amount_sats <= settings.auto_daily_sats
        else Route.MANUAL
    )


def _serialize_automatic_budget(session: Session) -> None:
    # Two concurrent approvals could each see room for one more payout and both go automatic,
    # overshooting the daily cap. A transaction-scoped advisory lock makes the read-then-approve
    # sequential on PostgreSQL (released at commit/rollback). SQLite serializes writers anyway.
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _AUTOMATIC_BUDGET_LOCK_ID})


def cancel(session: Session, payout_id: uuid.UUID, actor: str, reason: str | None = None) -> Payout:
    """Cancel a payout that nobody holds (awaiting_approval or approved) and for which no
    manual PSBT was ever handed out."""
    reason = validate_reason(reason)
    payout = get_payout(session, payout_id)
    if payout.state not in CANCELLABLE:
        raise _cancel_refused(payout)
    if payout.reserved_inputs:
        raise PsbtHandedOut(payout)
    cancelled = transition(
        session,
        payout_id,
        expected=CANCELLABLE,
        target=S.CANCELLED,
        actor=actor,
        reason=reason or "cancelled",
        # Nothing changed since the read: a claim and release in between would have handed
        # out a PSBT (reserved inputs) that this cancel did not see.
        guards=[Payout.version == payout.version],
    )
    if not cancelled:
        # A worker or a human claimed it between our read and our CAS: the claim wins.
        current = get_payout(session, payout_id)
        raise PsbtHandedOut(current) if current.reserved_inputs else _cancel_refused(current)
    return get_payout(session, payout_id)


def _cancel_refused(payout: Payout) -> InvalidState:
    holder = f" (claimed by {payout.claimed_by})" if payout.claimed_by else ""
    return InvalidState.for_action("cancel", payout.state, CANCELLABLE, detail=holder)
