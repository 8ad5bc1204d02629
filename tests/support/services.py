"""Reaching the real services the integration tiers need, and the CI rule for missing ones.

Locally a missing PostgreSQL/Redis skips the tests that need it, with the reason. With
CI=true it fails them: a CI run must never go green by skipping the real-service tiers.
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"

POSTGRES_ADMIN_URL = os.environ.get(
    "PAYOUTS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS_BASE_URL = os.environ.get("PAYOUTS_TEST_REDIS_URL", "redis://127.0.0.1:6379")


def service_missing(service: str, detail: str) -> None:
    message = f"{service} is not reachable ({detail})"
    if IN_CI:
        pytest.fail(f"{message}; CI=true requires it, so this fails instead of skipping")
    pytest.skip(message)


def postgres_reachable() -> str | None:
    """None when reachable, else the error text."""
    from sqlalchemy import create_engine, text

    engine = create_engine(POSTGRES_ADMIN_URL, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        return None
    except Exception as exc:  # any driver error means "not usable"
        return str(exc).splitlines()[0]
    finally:
        engine.dispose()


def redis_reachable(url: str) -> str | None:
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=3).ping()
        return None
    except Exception as exc:
        return str(exc)


def fresh_postgres_database() -> AbstractContextManager[str]:
    """Create an empty database, migrate it with Alembic, yield its URL, drop it after."""
    from tests.support.databases import scratch_database

    return scratch_database(POSTGRES_ADMIN_URL, "payouts_test")


TABLES_IN_DELETE_ORDER = (
    "events",
    "payout_events",
    "transaction_payouts",
    "idempotency_keys",
    "payouts",
    "transactions",
    "api_keys",
)


def truncate_all(url: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {', '.join(TABLES_IN_DELETE_ORDER)} RESTART IDENTITY"))
    engine.dispose()
