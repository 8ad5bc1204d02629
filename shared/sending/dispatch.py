"""Publishing Celery messages from outside the worker (the API, the demo, the sweeper).

Messages are sent by task *name*, so the API never imports worker code. Call these only after the DB
transaction that justifies the message has committed (docs/architecture.md §6): a message for an
uncommitted approval could be processed against a row that is never committed.
"""

from __future__ import annotations

import uuid
from functools import lru_cache

from celery import Celery

from shared.infra.celery_config import make_celery
from shared.infra.task_names import PROCESS_PAYOUT

# The message's task name (shared/infra/task_names.py), kept under this name for callers.
PROCESS_PAYOUT_TASK = PROCESS_PAYOUT.name


@lru_cache(maxsize=1)
def publisher() -> Celery:
    return make_celery("payouts-publisher")


def reset_publisher() -> None:
    publisher.cache_clear()


def enqueue_process_payout(payout_id: uuid.UUID | str) -> None:
    """Ask a worker to pay this payout. Duplicates are harmless: the claim CAS dedupes."""
    # The queue comes from the publisher's task_routes (shared/infra/task_names.py).
    publisher().send_task(PROCESS_PAYOUT.name, args=[str(payout_id)])
