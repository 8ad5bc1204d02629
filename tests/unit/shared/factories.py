"""Unit-test helpers: a SQLite database with the migrated schema, and a payout factory.

The schema comes from the Alembic migrations, as in production (not `Base.metadata.create_all`):
they run once per test session into a template file, and every test gets a copy of it.

Tests may set any column directly (including `state`) to build a scenario; production code
may not, which is exactly what the state machine tests check.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
import uuid
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from shared.core.models import IdempotencyKey, Payout, PayoutEvent, PayoutState, utcnow
from shared.infra.db import make_engine
from shared.infra.migrate import upgrade
from shared.infra.settings import get_settings

# Valid regtest addresses (BIP173 test vectors re-encoded with the `bcrt` prefix, and a
# base58 P2PKH that regtest shares with testnet).
REGTEST_P2WPKH = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"
REGTEST_P2WSH = "bcrt1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3qzf4jry"
TESTNET_P2PKH = "mipcBbFg9gMiCh81Kj8tqqdgoZub1ZJRfn"


@cache
def _migrated_template() -> Path:
    """A SQLite file migrated to head, made once per test process."""
    directory = Path(tempfile.mkdtemp(prefix="payouts-schema-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    template = directory / "migrated.db"
    upgrade(f"sqlite:///{template}")
    return template


def migrated_sqlite(path: str | Path) -> str:
    """Make `path` a new SQLite database with the migrated schema; return its URL."""
    target = Path(path)
    if target.exists() and target.stat().st_size > 0:
        raise FileExistsError(f"{target} already exists; a migrated copy needs a new file")
    shutil.copyfile(_migrated_template(), target)
    return f"sqlite:///{target}"


def sqlite_engine(path: str | Path) -> Engine:
    return make_engine(migrated_sqlite(path))


def migrate_app_database() -> None:
    """Give the configured database (PAYOUTS_DATABASE_URL, a new SQLite file) the migrated
    schema. Call it before the app's engine first connects."""
    url = make_url(get_settings().database_url)
    if url.get_backend_name() != "sqlite" or not url.database:
        raise ValueError(f"unit tests migrate SQLite files only, not {url!r}")
    migrated_sqlite(url.database)


def use_app_database(monkeypatch: pytest.MonkeyPatch, path: Path, **env: str) -> str:
    """Make a new migrated SQLite file at `path` the configured database (PAYOUTS_DATABASE_URL),
    with the other settings in `env` set first; return its URL."""
    url = f"sqlite:///{path}"
    monkeypatch.setenv("PAYOUTS_DATABASE_URL", url)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    migrate_app_database()
    return url


def make_payout(
    session: Session,
    *,
    state: PayoutState = PayoutState.AWAITING_APPROVAL,
    amount_sats: int = 10_000,
    created_by: str = "creator",
    **columns: Any,
) -> Payout:
    payout = Payout(
        id=uuid.uuid4(),
        amount_sats=amount_sats,
        state=state,
        created_by=created_by,
        metadata_={},
        **{"destination": REGTEST_P2WPKH, **columns},
    )
    session.add(payout)
    session.commit()
    return payout


def approved_ago(hours: float) -> Any:
    return utcnow() - timedelta(hours=hours)


def row_counts(session: Session) -> dict[str, int]:
    """How many payouts, events and idempotency keys exist: 'nothing changed' checks."""
    return {
        model.__tablename__: int(session.scalar(select(func.count()).select_from(model)) or 0)
        for model in (Payout, PayoutEvent, IdempotencyKey)
    }
