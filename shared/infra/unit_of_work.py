"""Who owns a DB transaction: the one rule (docs/architecture.md §2).

Whoever opens the session owns its transactions; domain code never decides when to commit.

- An API request gets one `UnitOfWork` (`api.deps`). Routes pass it (or its `session`) to domain
  functions and call `uow.commit()` at the end; whatever was not committed when the request
  ends is rolled back.
- A Celery task or beat job owns its units of work: it opens each with
  `shared.infra.db.session_scope()` (commit on success, roll back on error), as many as its
  steps need (claim; persist the signed bytes; broadcast).
- CLI commands, the demo and the bench do the same with `session_scope()` or `unit_of_work()`.

Domain functions take a `Session` and never commit it. A function that must act at commit time
takes the `UnitOfWork` instead:

- `after_commit(callback)` for an effect that may happen only once the change is durable:
  approving a payout publishes `process_payout` (a worker must never see a message for an
  approval that could still roll back, §6). The callback runs after a successful commit and
  is dropped on rollback. It cannot undo the commit, so an exception from it is logged and the
  remaining callbacks still run: use it for effects something else repairs when lost (the
  sweeper re-publishes unclaimed approvals).
- `step()` for a durable checkpoint inside one operation: the manual route commits its claim
  with the reserved inputs, then the signed bytes before it broadcasts them (§5.1, §7). A step
  commits everything the unit of work holds on success and rolls it back on any exception.

Commit through the unit of work, never `uow.session.commit()`: only then do the hooks run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sqlalchemy.orm import Session

from shared.infra.db import get_sessionmaker

log = logging.getLogger(__name__)

AfterCommit = Callable[[], object]


class UnitOfWork:
    """A Session plus the callbacks that must run only once its transaction has committed."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._after_commit: list[AfterCommit] = []

    def after_commit(self, callback: AfterCommit) -> None:
        """Run `callback` after the next successful commit; forget it on rollback."""
        self._after_commit.append(callback)

    def commit(self) -> None:
        """Commit, then run the after-commit callbacks registered so far, in order. A failed
        commit rolls back and drops them."""
        try:
            self.session.commit()
        except BaseException:
            self.rollback()
            raise
        callbacks, self._after_commit = self._after_commit, []
        for callback in callbacks:
            try:
                callback()
            except Exception:
                # The transaction is committed whatever happens here; the caller's result
                # stands, so a lost side effect is logged, not raised.
                log.exception("after-commit callback %r failed", callback)

    def rollback(self) -> None:
        """Roll back and drop the after-commit callbacks registered since the last commit."""
        self._after_commit = []
        self.session.rollback()

    @contextmanager
    def step(self) -> Iterator[Session]:
        """A durable checkpoint: commit on success, roll back on any exception."""
        try:
            yield self.session
        except BaseException:
            self.rollback()
            raise
        self.commit()

    def close(self) -> None:
        """End the unit of work: whatever was not committed is rolled back."""
        self._after_commit = []
        self.session.close()


@contextmanager
def unit_of_work() -> Iterator[UnitOfWork]:
    """A unit of work on a new session, outside a request (CLI, demo, tests): commit on
    success (running the hooks), roll back on any exception, close at the end."""
    uow = UnitOfWork(get_sessionmaker()())
    try:
        with uow.step():
            yield uow
    finally:
        uow.close()
