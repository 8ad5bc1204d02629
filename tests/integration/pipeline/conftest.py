"""A whole running system per test module (starting Celery workers is too slow per test)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support.services import truncate_all
from tests.support.stack import Stack, build_stack


def simulated_node_only() -> None:
    """Fault injection is a feature of the simulated node; real bitcoind has no such RPCs."""
    if os.environ.get("PAYOUTS_TEST_BITCOIND_URL"):
        pytest.skip("needs the simulated node's fault injection (devnode_* RPCs)")


@pytest.fixture(scope="module")
def stack_settings() -> dict[str, str]:
    """Override per module to run the stack with other PAYOUTS_* settings."""
    return {"auto_max_sats": "1000000"}


@pytest.fixture(scope="module")
def stack(
    postgres_url: str,
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
    stack_settings: dict[str, str],
) -> Iterator[Stack]:
    truncate_all(postgres_url)
    saved_env = dict(os.environ)
    running = build_stack(
        postgres_url=postgres_url,
        redis_url=redis_url,
        workdir=tmp_path_factory.mktemp("stack"),
        **stack_settings,
    )
    try:
        running.start_worker()
        running.start_worker()
        running.start_beat()
        yield running
    finally:
        running.close()
        os.environ.clear()
        os.environ.update(saved_env)
