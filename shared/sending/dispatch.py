"""Publishing Celery messages from outside the worker (the API, the demo, the sweeper).

Messages are sent by task *name*, so the API never imports worker code. Call these only after the DB
transaction that justifies the message has committed (docs/architecture.md §6): a message for an
uncommitted approval could be processed against a row that is never committed.
"""

from __future__ import annotations

import uuid
from functools import lru_cache

import redis
from celery import Celery

from shared.infra.celery_config import make_celery
from shared.infra.settings import get_settings
from shared.infra.task_names import PROCESS_PAYOUT
from shared.sending.batch_signals import BatchSignals, wallet_name

# A publisher must never hang an approval on a slow Redis: the wake-up flag only saves work.
FLAG_TIMEOUT_SECONDS = 0.5

# The message's task name (shared/infra/task_names.py), kept under this name for callers.
PROCESS_PAYOUT_TASK = PROCESS_PAYOUT.name


@lru_cache(maxsize=1)
def publisher() -> Celery:
    return make_celery("payouts-publisher")


@lru_cache(maxsize=1)
def _flag_redis() -> redis.Redis:
    return redis.Redis.from_url(
        get_settings().redis_url,
        socket_timeout=FLAG_TIMEOUT_SECONDS,
        socket_connect_timeout=FLAG_TIMEOUT_SECONDS,
    )


def reset_publisher() -> None:
    publisher.cache_clear()
    _flag_redis.cache_clear()


def enqueue_process_payout(payout_id: uuid.UUID | str, *, coalesce: bool = True) -> bool:
    """Ask a worker to pay this payout; True when a message was published.

    One message wakes a batch run that pays every approved payout, so while a wake-up is
    outstanding (shared/sending/batch_signals.py) further approvals publish nothing: a burst
    of 2,000 approvals costs a handful of messages, not 2,000 tasks. With
    BATCH_INTERVAL_SECONDS > 0 only the schedule starts runs, so nothing is published.
    `coalesce=False` always publishes (a deliberate duplicate, as the demo sends).
    Duplicates are harmless: the claim CAS dedupes.
    """
    settings = get_settings()
    if coalesce and settings.batch_interval_seconds > 0:
        return False
    signals = BatchSignals(_flag_redis(), wallet_name(settings))
    if coalesce and not signals.should_publish():
        return False
    try:
        # The queue comes from the publisher's task_routes (shared/infra/task_names.py).
        publisher().send_task(PROCESS_PAYOUT.name, args=[str(payout_id)])
    except BaseException:
        if coalesce:
            signals.publish_failed()  # the next approval must try again
        raise
    return True
