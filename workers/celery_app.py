"""The worker-side Celery app: shared config, task modules, the beat schedule."""

from __future__ import annotations

from typing import Any

from celery.signals import setup_logging, worker_process_init

from shared.infra import task_names
from shared.infra.celery_config import make_celery
from shared.infra.db import reset_engine_cache
from shared.infra.log_setup import configure_logging
from shared.infra.settings import get_settings
from shared.infra.task_names import TaskName

settings = get_settings()
app = make_celery("payouts")
app.conf.include = ["workers.tasks"]

# Recovery work; each job is idempotent, so a slow run overlapping the next is harmless.
_every = float(settings.maintenance_interval_seconds)


def _beat_entry(task: TaskName, every: float, expires: float) -> dict[str, Any]:
    # The queue comes from task_routes (shared/infra/task_names.py), as for every message.
    return {"task": task.name, "schedule": every, "options": {"expires": expires}}


app.conf.beat_schedule = {
    "sweep-unclaimed": _beat_entry(task_names.SWEEP, _every, _every * 3),
    "rebroadcast-signed": _beat_entry(task_names.REBROADCAST, _every, _every * 3),
    "track-confirmations": _beat_entry(task_names.TRACK_CONFIRMATIONS, _every, _every * 3),
    # Stuck transactions only change with new blocks; looking every interval is cheap (one
    # estimatesmartfee, one getmempoolentry per broadcast transaction).
    "bump-fees": _beat_entry(task_names.BUMP_FEES, _every, _every * 3),
    # Rare work (orphans need two leases to qualify); no need to look every interval.
    "release-orphaned-locks": _beat_entry(
        task_names.RELEASE_ORPHANED_LOCKS,
        max(_every, settings.lease_seconds / 2),
        settings.lease_seconds,
    ),
}
if settings.batch_interval_seconds > 0:
    # Batches only on this schedule (approvals publish nothing); an entry that outlived one
    # interval is dropped, the next one does the same work.
    _batch_every = float(settings.batch_interval_seconds)
    app.conf.beat_schedule["run-batches"] = _beat_entry(
        task_names.RUN_BATCHES, _batch_every, _batch_every
    )


@setup_logging.connect
def _configure_logging(**_: Any) -> None:
    configure_logging(settings.log_level, settings.log_json)


@worker_process_init.connect
def _fresh_connections_after_fork(**_: Any) -> None:
    # Pooled DB connections must not be shared between forked children.
    reset_engine_cache()
