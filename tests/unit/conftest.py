"""Unit tier: no real services. Anything that reaches for Redis through settings (the shared
metrics counters, the publisher) gets a port where nothing listens, so a unit test can never
write into a developer's Redis; tests that want Redis pass a fakeredis client explicitly.

The `engine` and `session` fixtures give each test a fresh migrated SQLite database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from tests.unit.shared.factories import sqlite_engine

NOWHERE = "redis://127.0.0.1:1/0"


@pytest.fixture(autouse=True)
def _no_real_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYOUTS_REDIS_URL", NOWHERE)
    monkeypatch.delenv("PAYOUTS_BROKER_URL", raising=False)
    # A batch run claims at once: unit tests approve everything before they run it.
    monkeypatch.setenv("PAYOUTS_BATCH_WINDOW_SECONDS", "0")


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    """An engine on a fresh SQLite file with the migrated schema."""
    engine = sqlite_engine(str(tmp_path / "unit.db"))
    yield engine
    engine.dispose()


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    """A session on `engine` (a module may override it, e.g. to make the file the app's
    configured database)."""
    with Session(engine, expire_on_commit=False) as session:
        yield session
