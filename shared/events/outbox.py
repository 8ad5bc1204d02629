"""Writing the outbox: one `events` row in the caller's DB transaction.

The row commits or vanishes with the change it describes; nothing here commits, flushes
to the network or waits on a reader, so the payment path never waits on delivery. The
row's `sequence` stays NULL until the feed's sequencer numbers it (shared/events/feed.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session

from shared.core.models import Event, utcnow
from shared.events.types import EVENT_TYPES


class UnknownEventType(ValueError):
    """A programming error: an event type not in shared/events/types.py."""


def record(
    session: Session,
    type: str,  # noqa: A002 - the column's and the feed's name for it
    payout_id: uuid.UUID | None,
    data: Mapping[str, Any],
) -> None:
    """Add one event in the caller's transaction (an INSERT, executed now, never committed)."""
    record_many(session, [(type, payout_id, data)])


def record_many(
    session: Session, events: Sequence[tuple[str, uuid.UUID | None, Mapping[str, Any]]]
) -> None:
    """Add several events in one multi-row INSERT, in order (a batch's payouts)."""
    if not events:
        return
    for event_type, _, _ in events:
        if event_type not in EVENT_TYPES:
            raise UnknownEventType(event_type)
    now = utcnow()
    # A Core INSERT, not session.add: it runs at once in the caller's transaction (so it is
    # ordered with the change's own statements) and leaves `writer_xact_id` to the server.
    session.execute(
        insert(Event),
        [
            {"type": event_type, "payout_id": payout_id, "at": now, "data": dict(data)}
            for event_type, payout_id, data in events
        ],
    )
