"""Unit tier: no real services. Anything that reaches for Redis through settings (the shared
metrics counters, the publisher) gets a port where nothing listens, so a unit test can never
write into a developer's Redis; tests that want Redis pass a fakeredis client explicitly."""

from __future__ import annotations

import pytest

NOWHERE = "redis://127.0.0.1:1/0"


@pytest.fixture(autouse=True)
def _no_real_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYOUTS_REDIS_URL", NOWHERE)
    monkeypatch.delenv("PAYOUTS_BROKER_URL", raising=False)
