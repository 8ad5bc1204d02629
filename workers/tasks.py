"""Task definitions. Each takes ids only and calls into `shared/` (STYLE: thin workers)."""

from __future__ import annotations

import logging
import os
import uuid
from functools import lru_cache

import redis
from celery import Task
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from shared import maintenance
from shared.dispatch import enqueue_process_payout
from shared.node import NodeClient
from shared.node.errors import NodeUnavailable
from shared.processing import Outcome
from shared.processing import process_payout as run_process_payout
from shared.settings import get_settings
from workers.celery_app import app

log = logging.getLogger(__name__)

# Infrastructure blips (DB restart, node down) are retried by Celery with backoff; the
# message stays unacked meanwhile, so nothing is lost. Business outcomes are not exceptions.
INFRA_ERRORS = (SQLAlchemyError, NodeUnavailable, RedisError)
# Insufficient funds and similar waits: back off up to five minutes between tries.
MAX_BACKOFF_SECONDS = 300


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


@app.task(name="payouts.maintenance.sweep", autoretry_for=INFRA_ERRORS, max_retries=3)
def sweep() -> int:
    return maintenance.republish_unclaimed(get_settings(), _redis(), enqueue_process_payout)


@app.task(name="payouts.maintenance.rebroadcast", autoretry_for=INFRA_ERRORS, max_retries=3)
def rebroadcast() -> dict[str, int]:
    return maintenance.rebroadcast_signed(_node(), get_settings())


@app.task(name="payouts.maintenance.track_confirmations", autoretry_for=INFRA_ERRORS, max_retries=3)
def track_confirmations() -> dict[str, int]:
    report = maintenance.track_confirmations(_node(), get_settings())
    return {
        "confirmed": report.confirmed,
        "reorged": report.reorged,
        "dead": report.dead,
        "resent": report.resent,
    }
