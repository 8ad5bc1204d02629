"""UnitOfWork: after-commit hooks run only once the transaction is durable; a rollback drops them;
`step()` is a checkpoint that commits or rolls back."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from shared.core.models import Payout, PayoutState
from shared.infra.unit_of_work import UnitOfWork
from tests.unit.shared.factories import REGTEST_P2WPKH

S = PayoutState


@pytest.fixture
def uow(engine: Engine) -> Iterator[UnitOfWork]:
    unit = UnitOfWork(Session(engine, expire_on_commit=False))
    yield unit
    unit.close()


def add_payout(session: Session, state: PayoutState = S.AWAITING_APPROVAL) -> None:
    """A pending (uncommitted) write."""
    session.add(
        Payout(
            id=uuid.uuid4(),
            destination=REGTEST_P2WPKH,
            amount_sats=10_000,
            state=state,
            created_by="creator",
            metadata_={},
        )
    )
    session.flush()


def committed_states(engine: Engine) -> list[str]:
    """What another connection sees: only committed rows."""
    with Session(engine) as other:
        return list(other.scalars(select(Payout.state)))


def test_a_hook_runs_after_the_commit_and_sees_committed_data(
    engine: Engine, uow: UnitOfWork
) -> None:
    seen: list[list[str]] = []
    add_payout(uow.session, S.APPROVED)
    uow.after_commit(lambda: seen.append(committed_states(engine)))
    assert seen == []  # registering runs nothing

    uow.commit()

    assert seen == [[S.APPROVED]]


def test_a_hook_is_dropped_on_rollback_and_never_runs_later(
    engine: Engine, uow: UnitOfWork
) -> None:
    ran: list[str] = []
    add_payout(uow.session)
    uow.after_commit(lambda: ran.append("rolled back"))

    uow.rollback()
    uow.commit()  # a later commit must not run the hook of the rolled-back work

    assert ran == []
    assert committed_states(engine) == []


def test_hooks_run_once_in_order(uow: UnitOfWork) -> None:
    ran: list[int] = []
    uow.after_commit(lambda: ran.append(1))
    uow.after_commit(lambda: ran.append(2))
    uow.commit()
    uow.commit()
    assert ran == [1, 2]


def test_a_failing_hook_is_logged_and_the_others_still_run(
    engine: Engine, uow: UnitOfWork, caplog: pytest.LogCaptureFixture
) -> None:
    ran: list[str] = []

    def broken() -> None:
        raise ConnectionError("broker unreachable")

    add_payout(uow.session)
    uow.after_commit(broken)
    uow.after_commit(lambda: ran.append("second"))

    with caplog.at_level(logging.ERROR):
        uow.commit()  # the commit stands; the hook cannot undo it

    assert ran == ["second"]
    assert committed_states(engine) == [S.AWAITING_APPROVAL]
    assert any("after-commit callback" in r.getMessage() for r in caplog.records)


def test_a_failed_commit_rolls_back_and_drops_the_hooks(
    uow: UnitOfWork, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran: list[str] = []
    uow.after_commit(lambda: ran.append("should not run"))

    def failing_commit() -> None:
        raise RuntimeError("connection lost at commit")

    monkeypatch.setattr(uow.session, "commit", failing_commit)
    with pytest.raises(RuntimeError):
        uow.commit()
    monkeypatch.undo()
    uow.commit()

    assert ran == []


class TestStep:
    def test_commits_on_success_and_runs_the_hooks(self, engine: Engine, uow: UnitOfWork) -> None:
        ran: list[str] = []
        with uow.step() as session:
            add_payout(session, S.APPROVED)
            uow.after_commit(lambda: ran.append("after step"))
            assert ran == []
        assert ran == ["after step"]
        assert committed_states(engine) == [S.APPROVED]

    def test_rolls_back_on_an_exception_and_drops_the_hooks(
        self, engine: Engine, uow: UnitOfWork
    ) -> None:
        ran: list[str] = []
        with pytest.raises(ValueError), uow.step() as session:
            add_payout(session)
            uow.after_commit(lambda: ran.append("never"))
            raise ValueError("refused")
        uow.commit()
        assert ran == []
        assert committed_states(engine) == []

    def test_an_earlier_step_stays_committed_when_a_later_one_fails(
        self, engine: Engine, uow: UnitOfWork
    ) -> None:
        with uow.step() as session:
            add_payout(session, S.APPROVED)
        with pytest.raises(ValueError), uow.step() as session:
            add_payout(session)
            raise ValueError("refused")
        assert committed_states(engine) == [S.APPROVED]
