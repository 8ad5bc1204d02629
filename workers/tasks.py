"""Task definitions. Each takes ids only and calls into `shared/` (STYLE: thin workers).

Names, queues, retries, run-locks, log context and metrics are declared with
`workers.instrumented.payouts_task`; the bodies only do the work.
"""

from __future__ import annotations

import logging
import uuid

from celery import Task

from shared.infra import task_names
from shared.infra.settings import get_settings
from shared.node import NodeClient
from shared.recovery import coin_locks, confirmations
from shared.recovery import rebroadcast as rebroadcast_job
from shared.recovery import sweep as sweep_job
from shared.sending import fee_bumping
from shared.sending.automatic import Outcome, Result
from shared.sending.automatic import process_payout as run_process_payout
from shared.sending.automatic import run_batches as run_batches_now
from shared.sending.dispatch import enqueue_process_payout
from workers.celery_app import app
from workers.instrumented import (
    INFRA_ERRORS,
    RetryPolicy,
    RunLock,
    payouts_task,
    task_redis,
    worker_name,
)

log = logging.getLogger(__name__)

# A payout's infrastructure blips: retried soon and for long (the message stays unacked).
PAYOUT_RETRY = RetryPolicy(
    on=INFRA_ERRORS, max_retries=50, backoff=True, backoff_max_seconds=60, jitter=True
)
# A beat job's: a few tries; the next scheduled run does the same work anyway.
MAINTENANCE_RETRY = RetryPolicy(on=INFRA_ERRORS, max_retries=3)
# Insufficient funds and similar waits: back off up to five minutes between tries.
MAX_BACKOFF_SECONDS = 300
# A beat job's run-lock only stops runs piling up behind a slow one (overlapping runs are
# harmless: every job is idempotent). A worker killed mid-run never releases it, and the job
# then stops until the TTL runs out, so it must be short: 300 s left payouts unconfirmed for
# five minutes after a kill -9 (chaos suite). Three schedule intervals, at least this long:
MAINTENANCE_LOCK_MIN_SECONDS = 30


def _maintenance_lock_ttl() -> float:
    return max(MAINTENANCE_LOCK_MIN_SECONDS, 3 * get_settings().maintenance_interval_seconds)


def maintenance_lock(job: str, skipped: object) -> RunLock:
    # One run of each job at a time across all workers: a slow run (many transactions to
    # check) must not pile up behind itself and starve the payout queue. The key
    # `maintenance:<job>` is what tests/chaos watches.
    return RunLock(f"maintenance:{job}", _maintenance_lock_ttl, skipped)


def _node() -> NodeClient:
    return NodeClient.from_settings(get_settings())


@payouts_task(task_names.PROCESS_PAYOUT, retry=PAYOUT_RETRY, log_args=("payout_id",), bind=True)
def process_payout(self: Task, payout_id: str) -> str:
    """Start the hot wallet's batch run, or join the one running (shared/sending/automatic.py)."""
    result = run_process_payout(
        uuid.UUID(payout_id),
        worker_name=worker_name(self),
        settings=get_settings(),
        node=_node(),
        redis_client=task_redis(),
    )
    return _finish(self, f"process_payout {payout_id}", result)


@payouts_task(task_names.RUN_BATCHES, retry=PAYOUT_RETRY, bind=True)
def run_batches(self: Task) -> str:
    """The scheduled batch run (PAYOUTS_BATCH_INTERVAL_SECONDS > 0)."""
    result = run_batches_now(
        worker_name=worker_name(self), settings=get_settings(), node=_node(),
        redis_client=task_redis(),
    )  # fmt: skip
    return _finish(self, "run_batches", result)


def _finish(task: Task, what: str, result: Result) -> str:
    log.info(
        "%s: %s %s (%d payouts in %d batches)",
        what,
        result.outcome.value,
        result.detail,
        result.paid,
        result.batches,
        extra={"outcome": result.outcome.value, "txid": result.txid, "payout_count": result.paid},
    )
    if result.outcome == Outcome.RETRY:
        countdown = min(MAX_BACKOFF_SECONDS, 2 ** min(task.request.retries, 8))
        raise task.retry(countdown=countdown, max_retries=None)
    return result.outcome.value


@payouts_task(task_names.SWEEP, retry=MAINTENANCE_RETRY, run_lock=maintenance_lock("sweep", 0))
def sweep() -> int:
    return sweep_job.republish_unclaimed(
        get_settings(), task_redis(), enqueue_process_payout, queue_backlog=_payouts_backlog()
    )


def _payouts_backlog() -> int:
    """Messages waiting in the payouts queue (any kombu transport answers a passive declare)."""
    queue = task_names.PROCESS_PAYOUT.queue
    try:
        with app.connection_for_read() as conn:
            declared = conn.default_channel.queue_declare(queue=queue, passive=True)
            return int(declared.message_count)
    except Exception as exc:  # not declared yet, broker hiccup: sweep with normal patience
        log.info("payouts queue size unknown (%s); sweeping without backlog patience", exc)
        return 0


@payouts_task(
    task_names.REBROADCAST, retry=MAINTENANCE_RETRY, run_lock=maintenance_lock("rebroadcast", {})
)
def rebroadcast() -> dict[str, int]:
    return rebroadcast_job.rebroadcast_signed(_node(), get_settings())


@payouts_task(
    task_names.TRACK_CONFIRMATIONS,
    retry=MAINTENANCE_RETRY,
    run_lock=maintenance_lock("track_confirmations", {}),
)
def track_confirmations() -> dict[str, int]:
    report = confirmations.track_confirmations(_node(), get_settings(), task_redis())
    return {
        "confirmed": report.confirmed,
        "reorged": report.reorged,
        "dead": report.dead,
        "requeued": report.requeued,
        "resent": report.resent,
        "skipped": int(report.skipped),
    }


@payouts_task(
    task_names.RELEASE_ORPHANED_LOCKS,
    retry=MAINTENANCE_RETRY,
    run_lock=maintenance_lock("release_orphaned_locks", 0),
)
def release_orphaned_locks() -> int:
    return coin_locks.release_orphaned_locks(_node(), get_settings(), task_redis())


@payouts_task(
    task_names.BUMP_FEES, retry=MAINTENANCE_RETRY, run_lock=maintenance_lock("bump_fees", {})
)
def bump_fees() -> dict[str, object]:
    """Bump stuck transactions (shared/sending/fee_bumping.py `bump_stuck`)."""
    report = fee_bumping.bump_stuck(_node(), get_settings())
    return {"looked_at": report.looked_at, "bumped": report.bumped, "skipped": report.skipped,
            "no_estimate": report.no_estimate}  # fmt: skip
