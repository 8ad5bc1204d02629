"""Intake service: idempotent create, route decision (incl. the daily budget), four-eyes,
approve/cancel state rules, listing and events."""

from __future__ import annotations

import base64
import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from shared.core.models import IdempotencyKey, Payout, PayoutEvent, PayoutState, Route, Transaction
from shared.core.validation import ValidationError
from shared.infra.settings import DUST_LIMIT_SATS, Settings
from shared.infra.unit_of_work import UnitOfWork
from shared.intake import payouts as intake
from shared.intake.payouts import (
    FourEyesViolation,
    IdempotencyConflict,
    InvalidState,
    PayoutNotFound,
)
from tests.unit.shared.factories import (
    REGTEST_P2WPKH,
    REGTEST_P2WSH,
    make_payout,
    row_counts,
)

S = PayoutState


def settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "network": "regtest",
        "automatic_processing": True,
        "max_payout_sats": 50_000_000,
        "auto_max_sats": 1_000_000,
        "auto_daily_sats": 3_000_000,
        "four_eyes": False,
    }
    values.update(overrides)
    return Settings(**values)


def create(
    session: Session,
    key: str = "k1",
    *,
    client: str = "shop",
    destination: str = REGTEST_P2WPKH,
    amount_sats: Any = 10_000,
    metadata: Any = None,
    **overrides: Any,
) -> tuple[Payout, bool]:
    result = intake.create_payout_idempotent(
        session, client, key, destination, amount_sats, metadata, settings=settings(**overrides)
    )
    session.commit()
    return result


class TestCreateIdempotent:
    def test_new_key_creates_payout_event_and_key_row(self, session: Session) -> None:
        payout, created = create(session, metadata={"order": 7})

        assert created is True
        assert (payout.state, payout.created_by, payout.metadata_) == (
            S.AWAITING_APPROVAL,
            "shop",
            {"order": 7},
        )
        assert row_counts(session) == {"payouts": 1, "payout_events": 1, "idempotency_keys": 1}

    def test_same_key_same_body_returns_the_same_payout(self, session: Session) -> None:
        first, _ = create(session, metadata={"order": 7})

        again, created = create(session, metadata={"order": 7})

        assert (again.id, created) == (first.id, False)
        assert row_counts(session) == {"payouts": 1, "payout_events": 1, "idempotency_keys": 1}

    def test_replay_returns_the_current_state(self, session: Session) -> None:
        first, _ = create(session)
        intake.approve(UnitOfWork(session), first.id, "approver", settings=settings())
        session.commit()

        again, _ = create(session)

        assert again.state == S.APPROVED

    def test_absent_and_empty_metadata_are_the_same_request(self, session: Session) -> None:
        first, _ = create(session, metadata=None)

        again, created = create(session, metadata={})

        assert (again.id, created) == (first.id, False)

    def test_metadata_key_order_does_not_matter(self, session: Session) -> None:
        first, _ = create(session, metadata={"a": 1, "b": 2})

        again, _ = create(session, metadata={"b": 2, "a": 1})

        assert again.id == first.id

    @pytest.mark.parametrize(
        "change",
        [{"amount_sats": 10_001}, {"destination": REGTEST_P2WSH}, {"metadata": {"order": 8}}],
    )
    def test_same_key_different_body_conflicts_and_changes_nothing(
        self, session: Session, change: dict[str, Any]
    ) -> None:
        create(session)
        before = row_counts(session)

        with pytest.raises(IdempotencyConflict):
            create(session, **change)
        session.rollback()

        assert row_counts(session) == before

    def test_keys_are_scoped_per_client(self, session: Session) -> None:
        mine, _ = create(session, client="shop")

        theirs, created = create(session, client="other-shop")

        assert created is True and theirs.id != mine.id

    @pytest.mark.parametrize(
        "bad",
        [
            {"destination": "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"},  # mainnet
            {"destination": "garbage"},
            {"amount_sats": 0},
            {"amount_sats": 545},
            {"amount_sats": 50_000_001},
            {"amount_sats": 1.5},
            {"metadata": ["not", "an", "object"]},
            {"key": ""},
        ],
    )
    def test_invalid_input_raises_and_writes_nothing(
        self, session: Session, bad: dict[str, Any]
    ) -> None:
        with pytest.raises(ValidationError):
            create(session, **bad)
        session.rollback()

        assert row_counts(session) == {"payouts": 0, "payout_events": 0, "idempotency_keys": 0}

    def test_uppercase_bech32_is_stored_lowercase_and_replays_as_lowercase(
        self, session: Session
    ) -> None:
        first, _ = create(session, destination=REGTEST_P2WPKH.upper())

        again, created = create(session, destination=REGTEST_P2WPKH)

        assert first.destination == REGTEST_P2WPKH
        assert (again.id, created) == (first.id, False)

    def test_lost_race_on_the_unique_key_replays_the_winner(
        self, engine: Engine, session: Session, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # Another request with the same key commits between our lookup and our insert: the
        # unique (client, key) index must turn our insert into a replay, not a second payout.
        with Session(engine, expire_on_commit=False) as other:
            winner, _ = create(other)
        real_lookup = intake._find_idempotency_key
        calls = {"n": 0}

        def lookup_that_misses_once(*args: Any) -> IdempotencyKey | None:
            calls["n"] += 1
            return None if calls["n"] == 1 else real_lookup(*args)

        monkeypatch.setattr(intake, "_find_idempotency_key", lookup_that_misses_once)

        payout, created = create(session)

        assert (payout.id, created) == (winner.id, False)
        assert row_counts(session) == {"payouts": 1, "payout_events": 1, "idempotency_keys": 1}

    def test_lost_race_with_a_different_body_is_a_conflict(
        self, engine: Engine, session: Session, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        with Session(engine, expire_on_commit=False) as other:
            create(other, amount_sats=20_000)
        real_lookup = intake._find_idempotency_key
        calls = {"n": 0}

        def lookup_that_misses_once(*args: Any) -> IdempotencyKey | None:
            calls["n"] += 1
            return None if calls["n"] == 1 else real_lookup(*args)

        monkeypatch.setattr(intake, "_find_idempotency_key", lookup_that_misses_once)

        with pytest.raises(IdempotencyConflict):
            create(session, amount_sats=10_000)


class TestRouteDecision:
    def approve(self, session: Session, amount: int, **overrides: Any) -> tuple[Payout, Route]:
        payout = make_payout(session, amount_sats=amount)
        result = intake.approve(
            UnitOfWork(session), payout.id, "approver", settings=settings(**overrides)
        )
        session.commit()
        return result

    def test_small_payout_goes_automatic(self, session: Session) -> None:
        payout, route = self.approve(session, 1_000_000)

        assert route is Route.AUTOMATIC and payout.route == "automatic"

    def test_payout_above_auto_max_goes_manual(self, session: Session) -> None:
        _, route = self.approve(session, 1_000_001)

        assert route is Route.MANUAL

    def test_automatic_processing_off_sends_everything_manual(self, session: Session) -> None:
        _, route = self.approve(session, 1_000, automatic_processing=False)

        assert route is Route.MANUAL

    def test_daily_budget_fills_exactly_then_overflows_to_manual(self, session: Session) -> None:
        routes = [self.approve(session, 1_000_000)[1] for _ in range(3)]  # 3_000_000 = budget

        assert routes == [Route.AUTOMATIC] * 3
        assert self.approve(session, DUST_LIMIT_SATS)[1] is Route.MANUAL

    def test_approvals_older_than_24h_do_not_count(self, session: Session) -> None:
        for _ in range(3):
            self.approve(session, 1_000_000)
        session.execute(
            update(Payout).values(approved_at=Payout.approved_at - timedelta(hours=24, seconds=1))
        )
        session.commit()

        assert self.approve(session, 1_000_000)[1] is Route.AUTOMATIC

    def test_manual_and_cancelled_payouts_do_not_use_the_budget(self, session: Session) -> None:
        self.approve(session, 1_000_000)
        self.approve(session, 1_000_000)
        cancelled, _ = self.approve(session, 1_000_000)
        intake.cancel(session, cancelled.id, "ops")
        _, manual = self.approve(session, 1_000_000, automatic_processing=False)
        session.commit()
        assert manual is Route.MANUAL

        # 2_000_000 of live automatic approvals + 1_000_000 is exactly the budget.
        _, route = self.approve(session, 1_000_000)

        assert route is Route.AUTOMATIC


class TestApprove:
    def test_sets_approver_time_route_and_writes_an_event(self, session: Session) -> None:
        payout = make_payout(session)

        approved, route = intake.approve(
            UnitOfWork(session), payout.id, "boss", settings=settings()
        )
        session.commit()

        assert approved.state == S.APPROVED
        assert approved.approved_by == "boss" and approved.approved_at is not None
        assert approved.route == route.value
        event = session.scalars(select(PayoutEvent).order_by(PayoutEvent.id.desc())).first()
        assert event is not None
        assert (event.from_state, event.to_state, event.actor) == (
            S.AWAITING_APPROVAL,
            S.APPROVED,
            "boss",
        )

    @pytest.mark.parametrize("state", [s for s in S if s != S.AWAITING_APPROVAL])
    def test_any_other_state_is_refused_with_the_current_state(
        self, session: Session, state: PayoutState
    ) -> None:
        payout = make_payout(session, state=state)

        with pytest.raises(InvalidState) as caught:
            intake.approve(UnitOfWork(session), payout.id, "boss", settings=settings())

        assert caught.value.current_state == state
        assert state.value in caught.value.message
        session.rollback()
        assert intake.get_payout(session, payout.id).state == state

    def test_unknown_payout_is_not_found(self, session: Session) -> None:
        with pytest.raises(PayoutNotFound):
            intake.approve(UnitOfWork(session), uuid.uuid4(), "boss", settings=settings())

    def test_four_eyes_refuses_the_creator(self, session: Session) -> None:
        payout = make_payout(session, created_by="alice")

        with pytest.raises(FourEyesViolation):
            intake.approve(
                UnitOfWork(session), payout.id, "alice", settings=settings(four_eyes=True)
            )
        session.rollback()

        assert intake.get_payout(session, payout.id).state == S.AWAITING_APPROVAL

    def test_four_eyes_accepts_another_key(self, session: Session) -> None:
        payout = make_payout(session, created_by="alice")

        approved, _ = intake.approve(
            UnitOfWork(session), payout.id, "bob", settings=settings(four_eyes=True)
        )

        assert approved.approved_by == "bob"

    def test_without_four_eyes_the_creator_may_approve(self, session: Session) -> None:
        payout = make_payout(session, created_by="alice")

        approved, _ = intake.approve(UnitOfWork(session), payout.id, "alice", settings=settings())

        assert approved.state == S.APPROVED


class TestCancel:
    @pytest.mark.parametrize("state", [S.AWAITING_APPROVAL, S.APPROVED])
    def test_cancels_before_any_claim(self, session: Session, state: PayoutState) -> None:
        payout = make_payout(session, state=state)

        cancelled = intake.cancel(session, payout.id, "ops", reason="customer asked")
        session.commit()

        assert cancelled.state == S.CANCELLED
        event = session.scalars(select(PayoutEvent).order_by(PayoutEvent.id.desc())).first()
        assert event is not None and (event.actor, event.reason) == ("ops", "customer asked")

    @pytest.mark.parametrize(
        "state", [S.CLAIMED, S.SIGNED, S.BROADCAST, S.CONFIRMED, S.CANCELLED, S.FAILED]
    )
    def test_refused_once_claimed_or_finished(self, session: Session, state: PayoutState) -> None:
        payout = make_payout(session, state=state, claimed_by="worker:w1")

        with pytest.raises(InvalidState) as caught:
            intake.cancel(session, payout.id, "ops")

        assert caught.value.current_state == state
        assert "worker:w1" in caught.value.message
        session.rollback()
        assert intake.get_payout(session, payout.id).state == state

    def test_unknown_payout_is_not_found(self, session: Session) -> None:
        with pytest.raises(PayoutNotFound):
            intake.cancel(session, uuid.uuid4(), "ops")


class TestListing:
    def test_pages_cover_every_payout_once_in_creation_order(self, session: Session) -> None:
        ids = [make_payout(session).id for _ in range(7)]

        seen: list[uuid.UUID] = []
        cursor = None
        while True:
            page = intake.list_payouts(session, limit=3, cursor=cursor)
            seen.extend(p.id for p in page.items)
            if page.next_cursor is None:
                break
            cursor = page.next_cursor

        assert seen == ids

    def test_identical_created_at_is_ordered_by_id_without_gaps(self, session: Session) -> None:
        payouts = [make_payout(session) for _ in range(5)]
        moment = payouts[0].created_at
        session.execute(update(Payout).values(created_at=moment))
        session.commit()

        first = intake.list_payouts(session, limit=2)
        rest = intake.list_payouts(session, limit=10, cursor=first.next_cursor)

        listed = [p.id for p in first.items + rest.items]
        assert listed == sorted(p.id for p in payouts)

    def test_filter_by_state(self, session: Session) -> None:
        make_payout(session, state=S.AWAITING_APPROVAL)
        approved = make_payout(session, state=S.APPROVED)

        page = intake.list_payouts(session, state="approved")

        assert [p.id for p in page.items] == [approved.id]

    def test_last_page_has_no_cursor(self, session: Session) -> None:
        make_payout(session)

        assert intake.list_payouts(session, limit=1).next_cursor is None

    @pytest.mark.parametrize(
        "kwargs",
        [{"state": "paid"}, {"limit": 0}, {"limit": 201}, {"cursor": "bogus"}, {"cursor": "fA"}],
    )
    def test_bad_query_is_a_validation_error(self, session: Session, kwargs: Any) -> None:
        with pytest.raises(ValidationError):
            intake.list_payouts(session, **kwargs)

    @pytest.mark.parametrize(
        "raw",
        [
            # Valid ISO timestamps whose conversion to UTC leaves datetime's year range.
            "0001-01-01T00:00:00+01:00|00000000-0000-0000-0000-000000000000",
            "9999-12-31T23:59:59-01:00|00000000-0000-0000-0000-000000000000",
        ],
    )
    def test_out_of_range_cursor_is_a_validation_error(self, session: Session, raw: str) -> None:
        cursor = base64.urlsafe_b64encode(raw.encode()).decode()

        with pytest.raises(ValidationError, match="cursor"):
            intake.list_payouts(session, cursor=cursor)

    def test_events_are_listed_oldest_first(self, session: Session) -> None:
        payout, _ = create(session)
        intake.approve(UnitOfWork(session), payout.id, "boss", settings=settings())
        intake.cancel(session, payout.id, "ops")
        session.commit()

        events = intake.list_events(session, payout.id)

        assert [(e.from_state, e.to_state) for e in events] == [
            (None, S.AWAITING_APPROVAL),
            (S.AWAITING_APPROVAL, S.APPROVED),
            (S.APPROVED, S.CANCELLED),
        ]

    def test_events_of_unknown_payout_is_not_found(self, session: Session) -> None:
        with pytest.raises(PayoutNotFound):
            intake.list_events(session, uuid.uuid4())

    def test_transaction_ids_map_linked_payouts_only(self, session: Session) -> None:
        tx = Transaction(txid="ab" * 32, raw_hex="00", fee_sats=200, inputs=[])
        session.add(tx)
        session.flush()
        linked = make_payout(session, state=S.SIGNED, tx_id=tx.id)
        unlinked = make_payout(session)

        assert intake.transaction_ids(session, [linked, unlinked]) == {linked.id: "ab" * 32}


class TestApprovePublishesAfterCommit:
    """`approve` itself registers publishing `process_payout` on the unit of work: it runs
    only after the commit, once, and never for a rolled-back approval or the manual route."""

    @pytest.fixture
    def published(self, monkeypatch: pytest.MonkeyPatch) -> list[str]:
        sent: list[str] = []
        monkeypatch.setattr(
            "shared.sending.dispatch.enqueue_process_payout", lambda pid: sent.append(str(pid))
        )
        return sent

    def test_automatic_publishes_once_after_commit(
        self, session: Session, published: list[str]
    ) -> None:
        payout = make_payout(session)
        uow = UnitOfWork(session)

        _, route = intake.approve(uow, payout.id, "boss", settings=settings())
        assert route is Route.AUTOMATIC and published == []  # not before the commit

        uow.commit()
        uow.commit()
        assert published == [str(payout.id)]

    def test_a_rolled_back_approval_publishes_nothing(
        self, engine: Engine, session: Session, published: list[str]
    ) -> None:
        payout = make_payout(session)
        uow = UnitOfWork(session)
        intake.approve(uow, payout.id, "boss", settings=settings())

        uow.rollback()
        uow.commit()

        assert published == []
        with Session(engine) as other:
            assert other.get(Payout, payout.id).state == S.AWAITING_APPROVAL  # type: ignore[union-attr]

    def test_the_manual_route_publishes_nothing(
        self, session: Session, published: list[str]
    ) -> None:
        payout = make_payout(session, amount_sats=2_000_000)
        uow = UnitOfWork(session)
        _, route = intake.approve(uow, payout.id, "boss", settings=settings())
        uow.commit()
        assert route is Route.MANUAL and published == []

    def test_a_broker_outage_is_logged_and_the_approval_stands(
        self,
        engine: Engine,
        session: Session,
        monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        def down(_pid: object) -> None:
            raise ConnectionError("broker unreachable")

        monkeypatch.setattr("shared.sending.dispatch.enqueue_process_payout", down)
        payout = make_payout(session)
        uow = UnitOfWork(session)
        intake.approve(uow, payout.id, "boss", settings=settings())

        uow.commit()

        assert any("could not publish" in r.getMessage() for r in caplog.records)
        with Session(engine) as other:
            assert other.get(Payout, payout.id).state == S.APPROVED  # type: ignore[union-attr]
