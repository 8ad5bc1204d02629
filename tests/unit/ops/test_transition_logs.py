"""Every successful transition logs one JSON line with the payout, the states and the worker."""

from __future__ import annotations

import json
import logging

import pytest
from sqlalchemy.orm import Session

from shared.core.models import PayoutState
from shared.core.state_machine import transition
from shared.infra.log_setup import JsonFormatter
from tests.unit.shared.factories import make_payout

S = PayoutState


def _json_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    formatter = JsonFormatter()
    return [
        json.loads(formatter.format(r))
        for r in caplog.records
        if r.name == "shared.core.state_machine"
    ]


def test_a_won_transition_logs_payout_states_and_worker(
    session: Session, caplog: pytest.LogCaptureFixture
) -> None:
    payout = make_payout(session, state=S.APPROVED)
    caplog.set_level(logging.INFO, logger="shared.core.state_machine")

    assert transition(
        session, payout.id, expected=S.APPROVED, target=S.CLAIMED, actor="worker:w1@host/7"
    )

    [line] = _json_lines(caplog)
    assert line["payout_id"] == str(payout.id)
    assert (line["from_state"], line["to_state"]) == ("approved", "claimed")
    assert line["worker"] == "worker:w1@host/7"
    assert "worker:w1@host/7" in str(line["msg"])


def test_a_non_worker_actor_is_named_in_the_message_but_not_as_worker(
    session: Session, caplog: pytest.LogCaptureFixture
) -> None:
    payout = make_payout(session, state=S.AWAITING_APPROVAL)
    caplog.set_level(logging.INFO, logger="shared.core.state_machine")

    transition(session, payout.id, expected=S.AWAITING_APPROVAL, target=S.APPROVED, actor="ops")

    [line] = _json_lines(caplog)
    assert "worker" not in line
    assert str(line["msg"]).endswith("by ops")


def test_a_lost_compare_and_set_logs_nothing(
    session: Session, caplog: pytest.LogCaptureFixture
) -> None:
    payout = make_payout(session, state=S.CLAIMED)
    caplog.set_level(logging.INFO, logger="shared.core.state_machine")

    assert not transition(session, payout.id, expected=S.APPROVED, target=S.CLAIMED, actor="w")

    assert _json_lines(caplog) == []
