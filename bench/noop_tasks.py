"""The baseline: a Celery app with one task that does nothing but say when it ran.

Built by `shared.infra.celery_config.make_celery` like the real worker app, so broker, serializer,
acks_late, prefetch 1, events and queues are the same; started with the same command-line
flags (`bench.workers`), and logging is configured the same way, so per-task log lines cost
the same. What is left between this and `payouts.process_payout` is the pipeline's own work.
"""

from __future__ import annotations

import json
import time
from functools import lru_cache
from typing import Any

import redis
from celery import Celery
from celery.signals import setup_logging

from shared.infra.celery_config import PAYOUTS_QUEUE, make_celery
from shared.infra.log_setup import configure_logging
from shared.infra.settings import get_settings

NOOP_TASK = "bench.noop"
# Each execution appends `[sent_at, executed_at]` here; the bench reads the list afterwards.
DONE_LIST = "bench:noop:done"

settings = get_settings()
app = make_celery("payouts")


@setup_logging.connect
def _configure_logging(**_: Any) -> None:
    configure_logging(settings.log_level, settings.log_json)


@lru_cache(maxsize=1)
def _redis() -> redis.Redis:
    return redis.Redis.from_url(settings.redis_url, socket_timeout=5)


@app.task(name=NOOP_TASK)
def noop(sent_at: float) -> None:
    executed_at = time.time()
    _redis().rpush(DONE_LIST, json.dumps([sent_at, executed_at]))


def publish(publisher_app: Celery, count: int) -> None:
    """Send `count` no-op messages, each stamped with its own enqueue time."""
    for _ in range(count):
        publisher_app.send_task(NOOP_TASK, args=[time.time()], queue=PAYOUTS_QUEUE)
