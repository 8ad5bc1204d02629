"""Fixtures for every tier. Real-service fixtures fail (not skip) when CI=true."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from cli.caches import reset_process_caches
from tests.support import services


@pytest.fixture(autouse=True)
def _fresh_settings() -> Iterator[None]:
    # Tests set PAYOUTS_* with monkeypatch; cached settings/engines must not leak across.
    reset_process_caches()
    yield
    reset_process_caches()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this test session."""
    problem = services.postgres_reachable()
    if problem:
        services.service_missing("PostgreSQL", problem)
    with services.fresh_postgres_database() as url:
        yield url


@pytest.fixture
def pg_db(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The session database, emptied, and made the app's database for this test."""
    services.truncate_all(postgres_url)
    monkeypatch.setenv("PAYOUTS_DATABASE_URL", postgres_url)
    return postgres_url


@pytest.fixture(scope="session")
def redis_url() -> str:
    """A Redis database number of our own (PAYOUTS_TEST_REDIS_DB, default 14)."""
    db = int(os.environ.get("PAYOUTS_TEST_REDIS_DB", "14"))
    url = f"{services.REDIS_BASE_URL}/{db}"
    problem = services.redis_reachable(url)
    if problem:
        services.service_missing("Redis", problem)
    return url
