"""The automatic-route module once more, with RabbitMQ as the Celery broker
(docs/architecture.md §9: Redis by default, `amqp://` works the same).

The stack never inherits PAYOUTS_BROKER_URL from the environment (tests/support/stack.py builds
the processes' settings itself), so this module passes it as a stack setting: the API, the
workers, beat and this process's publisher all use RabbitMQ, while Redis keeps the locks and
counters. Locally a missing RabbitMQ skips the module; with CI=true it fails.
"""

from __future__ import annotations

import contextlib
import os

import pytest
import redis
from kombu import Connection

from shared.infra.celery_config import MAINTENANCE_QUEUE, PAYOUTS_QUEUE
from tests.integration.pipeline.test_automatic_route import (
    test_200_payouts_with_duplicate_messages_are_each_paid_exactly_once,
    test_manual_claims_racing_the_workers_on_automatic_payouts_never_pay,
)
from tests.support.services import service_missing
from tests.support.stack import Stack

# Collected here too: the same tests, on this module's stack.
__all__ = [
    "test_200_payouts_with_duplicate_messages_are_each_paid_exactly_once",
    "test_manual_claims_racing_the_workers_on_automatic_payouts_never_pay",
]

pytestmark = pytest.mark.integration

AMQP_URL = os.environ.get("PAYOUTS_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")


def rabbitmq_reachable(url: str) -> str | None:
    """None when reachable, else the error text."""
    try:
        with Connection(url, connect_timeout=3) as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=3)
        return None
    except Exception as exc:  # any transport error means "not usable"
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def purge_queues(url: str) -> None:
    """RabbitMQ keeps queues across runs: drop messages an earlier, aborted run left behind."""
    with Connection(url, connect_timeout=3) as conn:
        for name in (PAYOUTS_QUEUE, MAINTENANCE_QUEUE):
            channel = conn.channel()
            try:
                channel.queue_purge(name)
            except Exception:  # NOT_FOUND: never declared on this server, nothing to drop
                pass
            finally:
                with contextlib.suppress(Exception):
                    channel.close()


@pytest.fixture(scope="module")
def stack_settings() -> dict[str, str]:
    problem = rabbitmq_reachable(AMQP_URL)
    if problem:
        service_missing("RabbitMQ", problem)
    purge_queues(AMQP_URL)
    return {"auto_max_sats": "1000000", "broker_url": AMQP_URL}


def test_the_workers_consume_from_rabbitmq_not_redis(stack: Stack, redis_url: str) -> None:
    assert stack.env["PAYOUTS_BROKER_URL"] == AMQP_URL
    with Connection(AMQP_URL, connect_timeout=3) as conn:
        declared = conn.default_channel.queue_declare(PAYOUTS_QUEUE, passive=True)
    assert declared.consumer_count >= len(stack.workers)
    # A Redis broker would have bound its queues in the stack's Redis database.
    assert redis.Redis.from_url(redis_url).keys("_kombu.binding.*") == []
