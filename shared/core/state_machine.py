"""The payout and transaction state machines (docs/architecture.md §4). The only code that
writes `payouts.state` or `transactions.state` (tests/unit/shared/core/test_state_writes.py scans
the source to keep it so).

Every transition is a single compare-and-set UPDATE: `WHERE id = :id AND state IN (:expected)`
plus any extra guard the caller needs (claim token, lease expiry). The row count tells whether
we won; the audit row is inserted in the same DB transaction, so a transition and its record
commit or vanish together.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar, cast

from sqlalchemy import ColumnElement, CursorResult, insert, update
from sqlalchemy.orm import Session

from shared.core.models import Payout, PayoutEvent, PayoutState, Transaction, TxState, utcnow

log = logging.getLogger(__name__)
S = PayoutState

# from-state -> states it may move to. `claimed -> claimed` is a takeover of an expired lease;
# `claimed -> approved` gives a claim back (manual release, or a worker that could not fund).
ALLOWED: Mapping[PayoutState, frozenset[PayoutState]] = {
    S.AWAITING_APPROVAL: frozenset({S.APPROVED, S.CANCELLED}),
    S.APPROVED: frozenset({S.CLAIMED, S.CANCELLED, S.FAILED}),
    S.CLAIMED: frozenset({S.CLAIMED, S.APPROVED, S.SIGNED, S.FAILED}),
    # `-> approved` from signed/broadcast is a re-queue: the transaction is proven dead, its
    # conflict buried PAYOUTS_DEAD_DEPTH deep (docs/architecture.md §5.2).
    S.SIGNED: frozenset({S.BROADCAST, S.FAILED, S.APPROVED}),
    # `broadcast -> broadcast` moves a payout to another version of its transaction: a fee
    # bump, or the version that confirmed (docs/architecture.md §6, fee bumping).
    S.BROADCAST: frozenset({S.BROADCAST, S.CONFIRMED, S.FAILED, S.APPROVED}),
    S.CONFIRMED: frozenset({S.BROADCAST}),  # a reorg took the confirming block away
    S.CANCELLED: frozenset(),
    S.FAILED: frozenset(),
}

TERMINAL = frozenset(s for s, targets in ALLOWED.items() if not targets)

T = TxState
# A stored transaction's states. `signed` rows are inserted by claims.persist_signed with the
# payout's `claimed -> signed` CAS. `broadcast -> broadcast` and `confirmed -> confirmed` refresh
# the confirmation count; `confirmed -> broadcast` is a reorg; `conflicted` is proven dead.
# `replaced`: another version of the same payment is the live one (a fee bump persisted) or
# confirmed; a replaced version comes back (`-> broadcast`/`confirmed`) when it confirms instead,
# or when the node refused the bump that replaced it.
TX_ALLOWED: Mapping[TxState, frozenset[TxState]] = {
    T.SIGNED: frozenset({T.BROADCAST, T.CONFLICTED, T.REPLACED}),
    T.BROADCAST: frozenset({T.BROADCAST, T.CONFIRMED, T.CONFLICTED, T.REPLACED}),
    T.CONFIRMED: frozenset({T.CONFIRMED, T.BROADCAST, T.CONFLICTED, T.REPLACED}),
    T.REPLACED: frozenset({T.REPLACED, T.BROADCAST, T.CONFIRMED, T.CONFLICTED}),
    T.CONFLICTED: frozenset(),
}


class IllegalTransition(ValueError):
    """A programming error: the code asked for a transition the machine does not have."""


def is_allowed(source: PayoutState, target: PayoutState) -> bool:
    return target in ALLOWED[source]


def is_tx_allowed(source: TxState, target: TxState) -> bool:
    return target in TX_ALLOWED[source]


def create_payout(
    session: Session,
    *,
    destination: str,
    amount_sats: int,
    created_by: str,
    metadata: dict[str, Any] | None = None,
) -> Payout:
    """Insert a payout in `awaiting_approval` with its first audit row."""
    payout = Payout(
        id=uuid.uuid4(),
        destination=destination,
        amount_sats=amount_sats,
        state=S.AWAITING_APPROVAL,
        created_by=created_by,
        metadata_=metadata or {},
    )
    session.add(payout)
    session.flush()
    session.add(
        PayoutEvent(
            payout_id=payout.id,
            from_state=None,
            to_state=S.AWAITING_APPROVAL,
            actor=created_by,
            reason="created",
        )
    )
    return payout


def transition(
    session: Session,
    payout_id: uuid.UUID,
    *,
    expected: PayoutState | Iterable[PayoutState],
    target: PayoutState,
    actor: str,
    reason: str | None = None,
    claim_token: str | None = None,
    guards: Iterable[ColumnElement[bool]] = (),
    values: Mapping[str, Any] | None = None,
) -> bool:
    """Compare-and-set `payout.state` from one of `expected` to `target`.

    Returns True when exactly one row changed. `claim_token`, when given, must match the
    stored token: that is the fencing check that stops a worker whose lease was taken over.
    `values` are other columns to set in the same UPDATE (attribute names of `Payout`).
    The caller owns the DB transaction and must commit for the change to count.
    """
    sources = _checked_sources(PayoutState, expected, target, is_allowed, "payout")
    guards = list(guards)
    # One CAS per expected state, so the audit row records the exact state we moved from
    # (PostgreSQL's RETURNING only shows the new row).
    return any(
        transition_many(
            session,
            [payout_id],
            expected=source,
            target=target,
            actor=actor,
            reason=reason,
            claim_token=claim_token,
            guards=guards,
            values=values,
        )
        for source in sources
    )


def transition_many(
    session: Session,
    payout_ids: Sequence[uuid.UUID],
    *,
    expected: PayoutState,
    target: PayoutState,
    actor: str,
    reason: str | None = None,
    claim_token: str | None = None,
    guards: Iterable[ColumnElement[bool]] = (),
    values: Mapping[str, Any] | None = None,
    log_fields: Mapping[str, Any] | None = None,
) -> list[uuid.UUID]:
    """One compare-and-set UPDATE for many payouts in the same state (a batch): `UPDATE payouts
    SET state = :target, … WHERE id = ANY(:ids) AND state = :expected [AND claim_token = :t]`.

    Returns the ids that moved, so a caller that needs all or nothing compares the count with
    what it asked for (and rolls back its savepoint when they differ). Their audit rows are
    one multi-row INSERT in the same DB transaction. `values` may hold SQL expressions, e.g. a
    CASE on `Payout.id` that gives each row its own output index. `log_fields` are added to
    each payout's log line (e.g. the txid).
    """
    (source,) = _checked_sources(PayoutState, expected, target, is_allowed, "payout")
    target = PayoutState(target)
    if not payout_ids:
        return []
    conditions: list[ColumnElement[bool]] = [Payout.id.in_(payout_ids), Payout.state == source]
    if claim_token is not None:
        conditions.append(Payout.claim_token == claim_token)
    conditions.extend(guards)
    new_values = _new_values(values, state=target, version=Payout.version + 1)
    stmt = (
        update(Payout)
        .where(*conditions)
        .values(**new_values)
        .returning(Payout.id)
        .execution_options(synchronize_session=False)
    )
    # RETURNING instead of rowcount: it is exact on both PostgreSQL and SQLite.
    moved = list(cast(CursorResult[Any], session.execute(stmt)).scalars())
    if not moved:
        return []
    _audit(session, moved, source, target, actor, reason)
    # Logged at the CAS, before the caller commits: a later rollback (rare) leaves a line for
    # a transition that did not happen; the payout_events rows are the truth. One line per
    # payout, so grepping the logs for a payout id finds every step of it, batched or not.
    for pid in moved:
        log.info(
            "payout %s: %s -> %s by %s",
            pid,
            source.value,
            target.value,
            actor,
            extra={
                "payout_id": str(pid),
                "from_state": source.value,
                "to_state": target.value,
                "actor": actor,
                "worker": actor if actor.startswith("worker:") else None,
                **(log_fields or {}),
            },
        )
    return moved


def note(
    session: Session,
    payout_ids: Sequence[uuid.UUID],
    *,
    state: PayoutState,
    actor: str,
    reason: str,
) -> None:
    """An audit row that records an event without a state change (e.g. a fee bump of another
    transaction that carries this payout's along, CPFP). `state` is the state it happened in."""
    _audit(session, payout_ids, state, state, actor, reason)


def _audit(
    session: Session,
    payout_ids: Sequence[uuid.UUID],
    source: PayoutState,
    target: PayoutState,
    actor: str,
    reason: str | None,
) -> None:
    """The payouts' audit rows: one multi-row INSERT, in the caller's DB transaction."""
    if not payout_ids:
        return
    now = utcnow()
    session.execute(
        insert(PayoutEvent),
        [
            {"payout_id": pid, "from_state": source, "to_state": target, "actor": actor,
             "reason": reason, "at": now}
            for pid in payout_ids
        ],
    )  # fmt: skip


def transition_tx(
    session: Session,
    tx_id: uuid.UUID,
    *,
    expected: TxState | Iterable[TxState],
    target: TxState,
    values: Mapping[str, Any] | None = None,
) -> bool:
    """Compare-and-set `transactions.state`: `UPDATE transactions SET state = :target, …
    WHERE id = :id AND state IN (:expected)`.

    Returns True when the row moved (it was in one of `expected`), False when it was not (it
    moved on, or does not exist): the caller decides what a lost CAS means. `values` are other
    columns set in the same UPDATE (attribute names of `Transaction`); `updated_at` is always
    set. The caller owns the DB transaction.
    """
    sources = _checked_sources(TxState, expected, target, is_tx_allowed, "transaction")
    target = TxState(target)
    new_values = _new_values(values, state=target)
    stmt = (
        update(Transaction)
        .where(Transaction.id == tx_id, Transaction.state.in_(sources))
        .values(**new_values)
        .returning(Transaction.id)
        .execution_options(synchronize_session=False)
    )
    result = cast(CursorResult[Any], session.execute(stmt))
    moved = result.first() is not None
    if moved:
        log.debug("transaction %s: -> %s", tx_id, target.value)
    return moved


StateT = TypeVar("StateT", PayoutState, TxState)


def _checked_sources(
    kind: type[StateT],
    expected: StateT | Iterable[StateT],
    target: StateT,
    allowed: Callable[[Any, Any], bool],
    what: str,
) -> list[StateT]:
    """The expected states as a list, each checked to be a legal move to `target`."""
    # The states are str enums, so a bare state (enum or plain string) must not be iterated.
    sources = [kind(s) for s in ([expected] if isinstance(expected, str) else expected)]
    target = kind(target)
    if not sources:
        raise IllegalTransition(f"no expected {what} state given")
    for source in sources:
        if not allowed(source, target):
            raise IllegalTransition(f"{source} -> {target} is not a {what} transition")
    return sources


def _new_values(values: Mapping[str, Any] | None, **fixed: Any) -> dict[str, Any]:
    """The columns an UPDATE sets: the caller's, plus the new state and `updated_at`."""
    if "state" in (values or {}):
        raise IllegalTransition("pass the new state as target, not in values")
    return {**(values or {}), **fixed, "updated_at": utcnow()}
