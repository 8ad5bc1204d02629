"""Task definitions. Each takes ids only and calls into `shared/` (STYLE: thin workers)."""

from __future__ import annotations

import logging
import os
import uuid
from contextlib import AbstractContextManager
from functools import lru_cache

import redis
from celery import Task
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from shared.infra.celery_config import PAYOUTS_QUEUE
from shared.infra.locks import named_lock
from shared.infra.settings import get_settings
from shared.node import NodeClient
from shared.node.errors import NodeUnavailable
from shared.recovery import coin_locks, confirmations
from shared.recovery import rebroadcast as rebroadcast_job
from shared.recovery import sweep as sweep_job
from shared.sending.automatic import Outcome
from shared.sending.automatic import process_payout as run_process_payout
from shared.sending.dispatch import enqueue_process_payout
from workers.celery_app import app

log = logging.getLogger(__name__)

# Infrastructure blips (DB restart, node down) are retried by Celery with backoff; the
# message stays unacked meanwhile, so nothing is lost. Business outcomes are not exceptions.
INFRA_ERRORS = (SQLAlchemyError, NodeUnavailable, RedisError)
# Insufficient funds and similar waits: back off up to five minutes between tries.
MAX_BACKOFF_SECONDS = 300
# A beat job's run-lock only stops runs piling up behind a slow one (overlapping runs are
# harmless: every job is idempotent). A worker killed mid-run never releases it, and the job
# then stops until the TTL runs out, so it must be short: 300 s left payouts unconfirmed for
# five minutes after a kill -9 (chaos suite). Three schedule intervals, at least this long:
MAINTENANCE_LOCK_MIN_SECONDS = 30


@lru_cache(maxsize=1)
def _redis() -> redis.Redis:
    return redis.Redis.from_url(get_settings().redis_url, socket_timeout=5)


def _node() -> NodeClient:
    return NodeClient.from_settings(get_settings())


def _worker_name(task: Task) -> str:
    return f"{task.request.hostname or 'worker'}/{os.getpid()}"


@app.task(
    name="payouts.process_payout",
    bind=True,
    autoretry_for=INFRA_ERRORS,
    retry_backoff=True,
    retry_backoff_max=60,
    retry_jitter=True,
    max_retries=50,
)
def process_payout(self: Task, payout_id: str) -> str:
    result = run_process_payout(
        uuid.UUID(payout_id),
        worker_name=_worker_name(self),
        settings=get_settings(),
        node=_node(),
        redis_client=_redis(),
    )
    log.info(
        "process_payout %s: %s %s",
        payout_id,
        result.outcome.value,
        result.detail,
        extra={"payout_id": payout_id, "outcome": result.outcome.value, "txid": result.txid},
    )
    if result.outcome == Outcome.RETRY:
        countdown = min(MAX_BACKOFF_SECONDS, 2 ** min(self.request.retries, 8))
        raise self.retry(countdown=countdown, max_retries=None)
    return result.outcome.value


def _exclusive(job: str) -> AbstractContextManager[bool]:
    # One run of each job at a time across all workers: a slow run (many transactions to
    # check) must not pile up behind itself and starve the payout queue.
    ttl = max(MAINTENANCE_LOCK_MIN_SECONDS, 3 * get_settings().maintenance_interval_seconds)
    return named_lock(_redis(), f"maintenance:{job}", ttl)


@app.task(name="payouts.maintenance.sweep", autoretry_for=INFRA_ERRORS, max_retries=3)
def sweep() -> int:
    with _exclusive("sweep") as mine:
        if not mine:
            return 0
        return sweep_job.republish_unclaimed(
            get_settings(), _redis(), enqueue_process_payout, queue_backlog=_payouts_backlog()
        )


def _payouts_backlog() -> int:
    """Messages waiting in the payouts queue (any kombu transport answers a passive declare)."""
    try:
        with app.connection_for_read() as conn:
            declared = conn.default_channel.queue_declare(queue=PAYOUTS_QUEUE, passive=True)
            return int(declared.message_count)
    except Exception as exc:  # not declared yet, broker hiccup: sweep with normal patience
        log.info("payouts queue size unknown (%s); sweeping without backlog patience", exc)
        return 0


@app.task(name="payouts.maintenance.rebroadcast", autoretry_for=INFRA_ERRORS, max_retries=3)
def rebroadcast() -> dict[str, int]:
    with _exclusive("rebroadcast") as mine:
        return rebroadcast_job.rebroadcast_signed(_node(), get_settings()) if mine else {}


@app.task(
    name="payouts.maintenance.track_confirmations", autoretry_for=INFRA_ERRORS, max_retries=3
)
def track_confirmations() -> dict[str, int]:
    with _exclusive("track_confirmations") as mine:
        if not mine:
            return {}
        report = confirmations.track_confirmations(_node(), get_settings(), _redis())
    return {
        "confirmed": report.confirmed,
        "reorged": report.reorged,
        "dead": report.dead,
        "resent": report.resent,
        "skipped": int(report.skipped),
    }


@app.task(
    name="payouts.maintenance.release_orphaned_locks", autoretry_for=INFRA_ERRORS, max_retries=3
)
def release_orphaned_locks() -> int:
    with _exclusive("release_orphaned_locks") as mine:
        if not mine:
            return 0
        return coin_locks.release_orphaned_locks(_node(), get_settings(), _redis())
