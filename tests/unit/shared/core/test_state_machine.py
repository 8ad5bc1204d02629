"""The payout state machine: every allowed transition works and is audited; every refused
one changes nothing (docs/architecture.md §4)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import inspect, select
from sqlalchemy.orm import Session

from shared.core.models import Payout, PayoutEvent, PayoutState, Transaction, TxState
from shared.core.state_machine import (
    ALLOWED,
    TERMINAL,
    TX_ALLOWED,
    IllegalTransition,
    create_payout,
    is_allowed,
    transition,
    transition_tx,
)
from tests.unit.shared.factories import REGTEST_P2WPKH, make_payout

S = PayoutState
ALLOWED_PAIRS = [(s, t) for s in S for t in sorted(ALLOWED[s])]
ILLEGAL_PAIRS = [(s, t) for s in S for t in S if t not in ALLOWED[s]]
T = TxState
TX_ALLOWED_PAIRS = [(s, t) for s in T for t in sorted(TX_ALLOWED[s])]
TX_ILLEGAL_PAIRS = [(s, t) for s in T for t in T if t not in TX_ALLOWED[s]]


def snapshot(session: Session, payout_id: uuid.UUID) -> dict[str, Any]:
    session.expire_all()
    payout = session.get(Payout, payout_id)
    assert payout is not None
    columns = {c.key: getattr(payout, c.key) for c in inspect(Payout).mapper.column_attrs}
    events = session.scalars(select(PayoutEvent.id).where(PayoutEvent.payout_id == payout_id))
    return {"columns": columns, "events": list(events)}


def events_of(session: Session, payout_id: uuid.UUID) -> list[PayoutEvent]:
    stmt = select(PayoutEvent).where(PayoutEvent.payout_id == payout_id).order_by(PayoutEvent.id)
    return list(session.scalars(stmt))


class TestTransitionTable:
    def test_terminal_states_are_cancelled_and_failed(self) -> None:
        assert {S.CANCELLED, S.FAILED} == TERMINAL

    def test_is_allowed_matches_the_table(self) -> None:
        for source in S:
            for target in S:
                assert is_allowed(source, target) == (target in ALLOWED[source])

    def test_every_state_has_an_entry(self) -> None:
        assert set(ALLOWED) == set(S)


class TestCreatePayout:
    def test_creates_awaiting_approval_with_one_creation_event(self, session: Session) -> None:
        payout = create_payout(
            session, destination=REGTEST_P2WPKH, amount_sats=1_000, created_by="alice"
        )
        session.commit()

        assert payout.state == S.AWAITING_APPROVAL
        assert payout.version == 1
        [event] = events_of(session, payout.id)
        assert (event.from_state, event.to_state, event.actor) == (
            None,
            S.AWAITING_APPROVAL,
            "alice",
        )


class TestAllowedTransitions:
    @pytest.mark.parametrize(("source", "target"), ALLOWED_PAIRS, ids=lambda s: str(s))
    def test_moves_the_state_and_writes_exactly_one_audit_row(
        self, session: Session, source: PayoutState, target: PayoutState
    ) -> None:
        payout = make_payout(session, state=source)
        before = snapshot(session, payout.id)

        moved = transition(
            session, payout.id, expected=source, target=target, actor="tester", reason="because"
        )
        session.commit()

        assert moved is True
        after = snapshot(session, payout.id)
        assert after["columns"]["state"] == target
        assert after["columns"]["version"] == before["columns"]["version"] + 1
        new_events = [e for e in events_of(session, payout.id) if e.id not in before["events"]]
        assert len(new_events) == 1
        event = new_events[0]
        assert (event.from_state, event.to_state) == (source, target)
        assert (event.actor, event.reason) == ("tester", "because")

    @pytest.mark.parametrize(("source", "target"), ALLOWED_PAIRS, ids=lambda s: str(s))
    def test_refused_when_the_row_is_in_any_other_state(
        self, session: Session, source: PayoutState, target: PayoutState
    ) -> None:
        for actual in S:
            if actual == source:
                continue
            payout = make_payout(session, state=actual)
            before = snapshot(session, payout.id)

            moved = transition(session, payout.id, expected=source, target=target, actor="x")
            session.commit()

            assert moved is False, f"{actual} row moved by a CAS expecting {source}"
            assert snapshot(session, payout.id) == before

    def test_values_are_written_in_the_same_update(self, session: Session) -> None:
        payout = make_payout(session, state=S.APPROVED)

        transition(
            session,
            payout.id,
            expected=S.APPROVED,
            target=S.CLAIMED,
            actor="worker-1",
            values={"claimed_by": "worker-1", "claim_token": "t1"},
        )
        session.commit()

        columns = snapshot(session, payout.id)["columns"]
        assert (columns["claimed_by"], columns["claim_token"]) == ("worker-1", "t1")

    def test_several_expected_states_record_the_one_actually_left(self, session: Session) -> None:
        payout = make_payout(session, state=S.APPROVED)

        moved = transition(
            session,
            payout.id,
            expected=[S.AWAITING_APPROVAL, S.APPROVED],
            target=S.CANCELLED,
            actor="ops",
        )
        session.commit()

        assert moved is True
        assert events_of(session, payout.id)[-1].from_state == S.APPROVED

    def test_unknown_payout_id_moves_nothing(self, session: Session) -> None:
        moved = transition(
            session, uuid.uuid4(), expected=S.AWAITING_APPROVAL, target=S.APPROVED, actor="x"
        )

        assert moved is False
        assert session.scalars(select(PayoutEvent)).all() == []


class TestClaimTokenFence:
    def test_matching_claim_token_moves(self, session: Session) -> None:
        payout = make_payout(session, state=S.CLAIMED, claim_token="mine")

        moved = transition(
            session, payout.id, expected=S.CLAIMED, target=S.SIGNED, actor="w", claim_token="mine"
        )

        assert moved is True

    @pytest.mark.parametrize(
        ("columns", "cas"),
        [
            (
                {"state": S.CLAIMED, "claim_token": "current-holder"},
                {"expected": S.CLAIMED, "target": S.SIGNED, "claim_token": "expired-holder"},
            ),
            (
                {"state": S.APPROVED, "attempts": 5},
                {"expected": S.APPROVED, "target": S.CLAIMED, "guards": [Payout.attempts < 5]},
            ),
        ],
        ids=["wrong_claim_token", "false_guard"],
    )
    def test_a_failed_condition_changes_nothing(
        self, session: Session, columns: dict[str, Any], cas: dict[str, Any]
    ) -> None:
        payout = make_payout(session, **columns)
        before = snapshot(session, payout.id)

        moved = transition(session, payout.id, actor="stale-worker", **cas)
        session.commit()

        assert moved is False
        assert snapshot(session, payout.id) == before


ILLEGAL_CALLS = [
    *((source, {"expected": source, "target": target}) for source, target in ILLEGAL_PAIRS),
    (S.AWAITING_APPROVAL, {"expected": [S.AWAITING_APPROVAL, S.SIGNED], "target": S.CANCELLED}),
    (S.AWAITING_APPROVAL, {"expected": S.AWAITING_APPROVAL, "target": S.APPROVED,
                           "values": {"state": S.CONFIRMED}}),
]  # fmt: skip
ILLEGAL_CALL_IDS = [
    *(f"{source}-{target}" for source, target in ILLEGAL_PAIRS),
    "one_illegal_source_among_several",
    "state_smuggled_in_values",
]


class TestIllegalTransitions:
    @pytest.mark.parametrize(("state", "cas"), ILLEGAL_CALLS, ids=ILLEGAL_CALL_IDS)
    def test_raises_and_changes_nothing(
        self, session: Session, state: PayoutState, cas: dict[str, Any]
    ) -> None:
        payout = make_payout(session, state=state)
        before = snapshot(session, payout.id)

        with pytest.raises(IllegalTransition):
            transition(session, payout.id, actor="x", **cas)
        session.commit()

        assert snapshot(session, payout.id) == before

    def test_no_expected_state_raises(self, session: Session) -> None:
        payout = make_payout(session)

        with pytest.raises(IllegalTransition):
            transition(session, payout.id, expected=[], target=S.APPROVED, actor="x")


def make_tx(session: Session, state: TxState) -> Transaction:
    tx = Transaction(
        id=uuid.uuid4(),
        txid=uuid.uuid4().hex * 2,
        raw_hex="00",
        fee_sats=100,
        inputs=["a" * 64 + ":0"],
        state=state,
    )
    session.add(tx)
    session.commit()
    return tx


def tx_columns(session: Session, tx_id: uuid.UUID) -> dict[str, Any]:
    session.expire_all()
    tx = session.get(Transaction, tx_id)
    assert tx is not None
    return {c.key: getattr(tx, c.key) for c in inspect(Transaction).mapper.column_attrs}


class TestTransactionTransitions:
    def test_every_state_has_an_entry_and_conflicted_is_final(self) -> None:
        assert set(TX_ALLOWED) == set(T)
        assert TX_ALLOWED[T.CONFLICTED] == frozenset()
        assert T.SIGNED not in set().union(*TX_ALLOWED.values())  # nothing goes back to signed

    @pytest.mark.parametrize(("source", "target"), TX_ALLOWED_PAIRS, ids=lambda s: str(s))
    def test_moves_and_writes_the_values_in_the_same_update(
        self, session: Session, source: TxState, target: TxState
    ) -> None:
        tx = make_tx(session, source)
        before = tx_columns(session, tx.id)

        moved = transition_tx(
            session, tx.id, expected=source, target=target, values={"confirmations": 7}
        )
        session.commit()

        assert moved is True
        after = tx_columns(session, tx.id)
        assert (after["state"], after["confirmations"]) == (target, 7)
        assert after["updated_at"] >= before["updated_at"]

    @pytest.mark.parametrize(("source", "target"), TX_ALLOWED_PAIRS, ids=lambda s: str(s))
    def test_refused_when_the_row_is_in_any_other_state(
        self, session: Session, source: TxState, target: TxState
    ) -> None:
        for actual in T:
            if actual == source:
                continue
            tx = make_tx(session, actual)
            before = tx_columns(session, tx.id)

            moved = transition_tx(session, tx.id, expected=source, target=target)
            session.commit()

            assert moved is False, f"{actual} row moved by a CAS expecting {source}"
            assert tx_columns(session, tx.id) == before

    def test_several_expected_states(self, session: Session) -> None:
        tx = make_tx(session, T.BROADCAST)

        moved = transition_tx(
            session, tx.id, expected=[T.SIGNED, T.BROADCAST], target=T.CONFLICTED
        )
        session.commit()

        assert moved is True
        assert tx_columns(session, tx.id)["state"] == T.CONFLICTED

    @pytest.mark.parametrize(("source", "target"), TX_ILLEGAL_PAIRS, ids=lambda s: str(s))
    def test_illegal_transition_raises_and_changes_nothing(
        self, session: Session, source: TxState, target: TxState
    ) -> None:
        tx = make_tx(session, source)
        before = tx_columns(session, tx.id)

        with pytest.raises(IllegalTransition):
            transition_tx(session, tx.id, expected=source, target=target)
        session.commit()

        assert tx_columns(session, tx.id) == before

    def test_state_smuggled_in_values_or_no_expected_state_raises(self, session: Session) -> None:
        tx = make_tx(session, T.SIGNED)
        with pytest.raises(IllegalTransition):
            transition_tx(
                session, tx.id, expected=T.SIGNED, target=T.BROADCAST,
                values={"state": T.CONFIRMED},
            )  # fmt: skip
        with pytest.raises(IllegalTransition):
            transition_tx(session, tx.id, expected=[], target=T.BROADCAST)
        session.commit()
        assert tx_columns(session, tx.id)["state"] == T.SIGNED

    def test_unknown_transaction_moves_nothing(self, session: Session) -> None:
        assert transition_tx(session, uuid.uuid4(), expected=T.SIGNED, target=T.BROADCAST) is False
