"""The gap-free event feed: number committed outbox rows, then page by that number.

Why not page by `events.id`: ids are taken at INSERT, rows become visible at COMMIT. Writer T1
takes id 5, T2 takes 6 and commits first; a reader sees 6 and asks for `> 6` from then on, and
T1's row 5, committed a moment later, is never seen. So readers page by `sequence`, which the
*sequencer* (`assign_sequences`) gives out after the fact, under three rules:

1. One sequencer at a time (`pg_advisory_xact_lock(SEQUENCER_LOCK_ID)`), each continuing from
   the current maximum, and each commits before the next can take the lock: sequences become
   visible in increasing order, so any snapshot sees a prefix of them with no hole.
2. Only rows whose writer transaction is older than every transaction still running
   (`writer_xact_id < pg_snapshot_xmin(pg_current_snapshot())`): such a writer has ended, so
   no row of it can still appear, and no older writer can commit a row later.
3. In `id` order, stopping at the first visible row not ready yet (committed, but a still older
   writer runs): a change made after another committed has a larger id (it waited for it, or
   began after), so one payout's events are numbered in the order they happened.

The lock statement and the numbering UPDATE are separate statements in READ COMMITTED: the
UPDATE's snapshot is taken after the lock is held, so it sees the previous sequencer's numbers.
Writers never wait on this lock, nor on readers. The cost: a long-running *writing* transaction
anywhere in the database (read-only ones have no xid and do not count) holds back every row
written after it began until it ends; the feed is late then, never wrong.

On SQLite (unit tests, the embedded demo) the database serializes writers, so id order is
commit order and every visible row is ready: the same UPDATE numbers them in id order.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import exists, select, text
from sqlalchemy.orm import Session

from shared.core.models import Event

# pg_advisory_xact_lock key of the sequencer ("evts"); shared/intake/payouts.py uses "payo".
SEQUENCER_LOCK_ID = 0x65767473
# Rows numbered per sequencer pass: keeps the lock short after a backlog; the next call goes on.
SEQUENCER_BATCH = 5000
MAX_LIMIT = 1000

_BIGINT_MAX = 9223372036854775807

# rule 2 on PostgreSQL; `writer_xact_id` is `pg_current_xact_id()` stored as bigint.
_PG_READY = (
    "(writer_xact_id IS NULL"
    " OR writer_xact_id < pg_snapshot_xmin(pg_current_snapshot())::text::bigint)"
)

# One statement, so one snapshot decides what is visible, what is ready and the maximum.
_NUMBER_PENDING = """
WITH pending AS (
    SELECT id, {ready} AS ready FROM events
    WHERE sequence IS NULL ORDER BY id LIMIT :batch
),
first_blocked AS (SELECT min(id) AS id FROM pending WHERE NOT ready),
numbered AS (
    SELECT id, row_number() OVER (ORDER BY id) AS n FROM pending
    WHERE ready AND id < coalesce((SELECT id FROM first_blocked), {bigint_max})
),
top AS (SELECT coalesce(max(sequence), 0) AS sequence FROM events)
UPDATE events SET sequence = (SELECT sequence FROM top) + numbered.n
FROM numbered WHERE events.id = numbered.id
"""

SessionFactory = Callable[[], Session]


def assign_sequences(session: Session) -> int:
    """Number the committed rows that are ready (module docstring), in `session`'s transaction.

    Returns how many rows it numbered. The caller must commit right away: the sequencer lock is
    held until then, and numbers nobody committed must not be handed to a reader. Cheap when
    nothing waits (one index probe, no lock)."""
    if not session.scalar(select(exists().where(Event.sequence.is_(None)))):
        return 0
    postgres = session.get_bind().dialect.name == "postgresql"
    if postgres:
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": SEQUENCER_LOCK_ID})
    statement = _NUMBER_PENDING.format(
        ready=_PG_READY if postgres else "1", bigint_max=_BIGINT_MAX
    )
    result = session.execute(text(statement), {"batch": SEQUENCER_BATCH})
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def read_after(source: Session | SessionFactory, after: int, limit: int) -> list[Event]:
    """The events with `sequence > after`, in sequence order, at most `limit` (1..1000).

    Runs the sequencer first and **commits** it, so every returned sequence is durable (a
    number a reader has seen is never given to another row):
    - given a session factory (e.g. shared.infra.db.get_sessionmaker()), it opens its own
      sessions: one for the sequencer, committed, one for the read, closed; the events come
      back detached with every column loaded;
    - given a Session, it runs the sequencer in it and commits that session (anything else
      pending in it commits too), then reads in it; the events stay attached to it.

    A reader that passes the last sequence it saw gets every committed event exactly once,
    in order, however the writers' commits interleaved.
    """
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be 1..{MAX_LIMIT}, got {limit}")
    if isinstance(source, Session):
        assign_sequences(source)
        source.commit()
        return _page(source, after, limit)
    with source() as sequencing:
        assign_sequences(sequencing)
        sequencing.commit()
    # Closing the session ends its read transaction and detaches the rows without expiring
    # them (a rollback would expire them, and a detached expired row cannot load).
    with source() as reading:
        return _page(reading, after, limit)


def _page(session: Session, after: int, limit: int) -> list[Event]:
    stmt = (
        select(Event)
        .where(Event.sequence.is_not(None), Event.sequence > after)
        .order_by(Event.sequence)
        .limit(limit)
    )
    return list(session.scalars(stmt))


def last_sequence(session: Session) -> int:
    """The highest sequence given out so far (0 when none): where a new reader may start to
    see only what happens from now on."""
    return int(session.scalar(select(Event.sequence).order_by(Event.sequence.desc()).limit(1)) or 0)
