"""The bench writes its measured bursts in bulk; those rows must be the ones the API's create and
approve calls leave, or the batcher would be measured on payouts it never sees in production."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import inspect, select

from bench.pipeline import Burst
from shared.core.models import Payout, PayoutEvent
from shared.infra.db import session_scope

pytestmark = pytest.mark.integration

# Differ between any two payouts by nature.
OWN = {"id", "destination", "created_by", "approved_at", "created_at", "updated_at"}


def _payout(payout_id: uuid.UUID) -> dict[str, Any]:
    with session_scope() as session:
        row = session.execute(select(Payout).where(Payout.id == payout_id)).scalar_one()
        return {a.key: getattr(row, a.key) for a in inspect(Payout).column_attrs}


def _events(payout_id: uuid.UUID, creator: str) -> list[tuple[Any, ...]]:
    with session_scope() as session:
        rows = session.execute(
            select(PayoutEvent).where(PayoutEvent.payout_id == payout_id).order_by(PayoutEvent.id)
        ).scalars()
        return [(e.from_state, e.to_state, "<creator>" if e.actor == creator else e.actor,
                 e.reason) for e in rows]  # fmt: skip


def test_bulk_rows_equal_what_intake_writes(pg_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYOUTS_NETWORK", "regtest")
    monkeypatch.setenv("PAYOUTS_AUTO_DAILY_SATS", str(10**15))
    real, bulk = Burst(1), Burst(2)
    real.prepare(via_intake=True)
    bulk.prepare()

    expected = _payout(real.ids[0])
    for payout_id in bulk.ids:
        row = _payout(payout_id)
        assert {k: v for k, v in row.items() if k not in OWN} == {
            k: v for k, v in expected.items() if k not in OWN
        }
        assert row["approved_at"] is not None and row["created_by"] == bulk.creator
        assert _events(payout_id, bulk.creator) == _events(real.ids[0], real.creator)
    # Claims take the oldest first: the bulk rows keep the order they were made in.
    first, second = (_payout(i)["created_at"] for i in bulk.ids)
    assert first < second
