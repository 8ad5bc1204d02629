"""Celery configuration shared by the publisher side (API, sweeper) and the workers
(docs/architecture.md §9).

Both sides must agree on broker, serializer and transport options, so they are built here once.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu import Queue

from shared.infra.settings import Settings, get_settings
from shared.infra.task_names import MAINTENANCE_QUEUE, PAYOUTS_QUEUE, task_routes

# Redis redelivers an unacked message after visibility_timeout. It must exceed the longest
# time a task may legitimately hold a message, or a slow-but-alive worker's message would be
# handed to a second worker; a duplicate is harmless (the claim CAS stops it) but wasteful.
VISIBILITY_TIMEOUT_FLOOR_SECONDS = 3600


def celery_settings(settings: Settings) -> dict[str, Any]:
    return {
        "broker_url": settings.effective_broker_url,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {
            "visibility_timeout": max(VISIBILITY_TIMEOUT_FLOOR_SECONDS, settings.lease_seconds * 10)
        },
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_backend": None,
        "task_ignore_result": True,
        # Tasks are idempotent, so late acks + redelivery on worker loss is safe and means a
        # kill -9 mid-task loses nothing; prefetch 1 keeps a dying worker from holding a backlog.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        # Flower needs both to show every task from publish to finish.
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "task_default_queue": PAYOUTS_QUEUE,
        "task_queues": [Queue(PAYOUTS_QUEUE), Queue(MAINTENANCE_QUEUE)],
        # Every task to its queue (shared/infra/task_names.py), for publishers and beat alike.
        "task_routes": task_routes(),
        "worker_hijack_root_logger": False,
        "timezone": "UTC",
    }


def make_celery(name: str = "payouts", settings: Settings | None = None) -> Celery:
    app = Celery(name)
    app.conf.update(celery_settings(settings or get_settings()))
    return app
