"""Every Celery task's name and queue, declared once (docs/architecture.md §9).

The publisher side (the API, the sweeper, the demo) sends messages by name and must not import
worker code, so the names and their queues live here, in `shared/`: the worker's task
definitions (`workers/tasks.py`, through `workers.instrumented.payouts_task`), the beat
schedule (`workers/celery_app.py`), the routing table (`shared/infra/celery_config.py`) and
the publisher (`shared/sending/dispatch.py`) all read them from this module.

The names' values are part of the outside contract: Flower, running workers and messages
already in a queue use them. Never rename one.
"""

from __future__ import annotations

from dataclasses import dataclass

PAYOUTS_QUEUE = "payouts"
MAINTENANCE_QUEUE = "maintenance"


@dataclass(frozen=True)
class TaskName:
    """A task's registered name and the queue its messages go to."""

    name: str
    queue: str

    def __str__(self) -> str:
        return self.name


PROCESS_PAYOUT = TaskName("payouts.process_payout", PAYOUTS_QUEUE)
# With PAYOUTS_BATCH_INTERVAL_SECONDS > 0, beat starts the batch runs on that schedule.
RUN_BATCHES = TaskName("payouts.run_batches", PAYOUTS_QUEUE)

# Beat jobs (recovery work): one run of each at a time, on their own queue.
MAINTENANCE_PREFIX = "payouts.maintenance."
SWEEP = TaskName(MAINTENANCE_PREFIX + "sweep", MAINTENANCE_QUEUE)
REBROADCAST = TaskName(MAINTENANCE_PREFIX + "rebroadcast", MAINTENANCE_QUEUE)
TRACK_CONFIRMATIONS = TaskName(MAINTENANCE_PREFIX + "track_confirmations", MAINTENANCE_QUEUE)
RELEASE_ORPHANED_LOCKS = TaskName(MAINTENANCE_PREFIX + "release_orphaned_locks", MAINTENANCE_QUEUE)
BUMP_FEES = TaskName(MAINTENANCE_PREFIX + "bump_fees", MAINTENANCE_QUEUE)

ALL_TASKS: tuple[TaskName, ...] = (
    PROCESS_PAYOUT,
    RUN_BATCHES,
    SWEEP,
    REBROADCAST,
    TRACK_CONFIRMATIONS,
    RELEASE_ORPHANED_LOCKS,
    BUMP_FEES,
)


def task_routes() -> dict[str, dict[str, str]]:
    """Celery's `task_routes`: each task to its queue, by exact name."""
    return {task.name: {"queue": task.queue} for task in ALL_TASKS}
