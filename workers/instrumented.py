"""`payouts_task`: the one way a worker task is declared (in the spirit of Sentry's
`instrumented_task`).

Each task says once, at its definition:
- its name and queue: a `shared.infra.task_names.TaskName`, the constant the publisher, the
  beat schedule and the routing table use too;
- its retry policy (`RetryPolicy`): which exceptions Celery retries, with what delay or
  backoff, how many times;
- optionally a run-lock (`RunLock`): a Redis lock so only one run of the task works at a time
  across all workers; a run that finds it held returns `skipped` without working;
- which of its arguments name what the work is about (`log_args`, e.g. `payout_id`).

and gets, with no code in its body:
- log context: every line logged while it runs (the node client's included) carries `task`,
  `task_id`, `worker` and the `log_args` (shared/infra/log_setup.py `log_context`);
- metrics in the shared Redis hashes (shared/ops/metrics.py): `payouts_task_duration_seconds
  {task}` for every run that worked, `payouts_task_failures_total{task,error}` for every run
  that raised (a retried run included; Celery's own retry/ignore/reject signals are not
  failures).
"""

from __future__ import annotations

import inspect
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import redis
from celery import Celery, Task
from celery.exceptions import Ignore, Reject, Retry
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from shared.infra.locks import named_lock
from shared.infra.log_setup import log_context
from shared.infra.settings import get_settings
from shared.infra.task_names import TaskName
from shared.node.errors import NodeUnavailable
from shared.ops import metrics

log = logging.getLogger(__name__)

# Infrastructure blips (DB restart, node down, Redis away): retried by Celery; the message
# stays unacked meanwhile, so nothing is lost. Business outcomes are not exceptions.
INFRA_ERRORS: tuple[type[Exception], ...] = (SQLAlchemyError, NodeUnavailable, RedisError)
# Celery's control flow, raised through the task body on purpose: not failures.
CONTROL_FLOW = (Retry, Ignore, Reject)


@dataclass(frozen=True)
class RetryPolicy:
    """Which exceptions Celery retries and how. `max_retries=None` retries forever.

    With `backoff`, the n-th retry waits about 2**n seconds (capped at `backoff_max_seconds`,
    randomised with `jitter`); without it, every retry waits `delay_seconds`."""

    on: tuple[type[Exception], ...] = ()
    max_retries: int | None = 3
    backoff: bool = False
    backoff_max_seconds: int = 600
    jitter: bool = True
    delay_seconds: int = 180

    def celery_options(self) -> dict[str, Any]:
        return {
            "autoretry_for": self.on,
            "max_retries": self.max_retries,
            "retry_backoff": self.backoff,
            "retry_backoff_max": self.backoff_max_seconds,
            "retry_jitter": self.jitter,
            "default_retry_delay": self.delay_seconds,
        }


NO_RETRY = RetryPolicy()


@dataclass(frozen=True)
class RunLock:
    """One run at a time across all workers: the Redis lock `key`, held for at most
    `ttl_seconds()` (read at each run, so settings apply). With Redis down the run goes on
    without it (shared/infra/locks.py); `skipped` is what a run that found it held returns."""

    key: str
    ttl_seconds: Callable[[], float]
    skipped: Any = None


@lru_cache(maxsize=1)
def task_redis() -> redis.Redis:
    """The Redis the tasks use for locks (PAYOUTS_REDIS_URL), one client per process."""
    return redis.Redis.from_url(get_settings().redis_url, socket_timeout=5)


def worker_name(task: Task) -> str:
    """`<celery node name>/<pid>`: which worker process runs this task."""
    return f"{task.request.hostname or 'worker'}/{os.getpid()}"


def payouts_task(
    task: TaskName,
    *,
    retry: RetryPolicy = NO_RETRY,
    run_lock: RunLock | None = None,
    log_args: tuple[str, ...] = (),
    bind: bool = False,
    app: Celery | None = None,
) -> Callable[[Callable[..., Any]], Task]:
    """Register `fn` as the Celery task `task.name` (routed to `task.queue` by the
    `task_routes` of shared/infra/celery_config.py; see the module doc).

    `bind=True` passes the Celery task as the first argument (for `self.request`,
    `self.retry`). `app` defaults to the workers' app (workers/celery_app.py)."""

    def decorate(fn: Callable[..., Any]) -> Task:
        signature = inspect.signature(fn)
        unknown = set(log_args) - set(signature.parameters)
        if unknown:
            raise TypeError(f"{task.name}: log_args {sorted(unknown)} are not parameters")

        def run(self: Task, *args: Any, **kwargs: Any) -> Any:
            fields: dict[str, Any] = {
                "task": task.name,
                "task_id": self.request.id,
                "worker": worker_name(self),
            }
            if log_args:
                call = signature.bind_partial(*((self, *args) if bind else args), **kwargs)
                fields.update(
                    {name: str(call.arguments[name]) for name in log_args if name in call.arguments}
                )
            call_args = (self, *args) if bind else args
            with log_context(**fields):
                if run_lock is None:
                    return _measured(task.name, fn, call_args, kwargs)
                ttl = run_lock.ttl_seconds()
                with named_lock(task_redis(), run_lock.key, ttl) as mine:
                    if not mine:
                        log.debug("%s: another run holds %s; skipped", task.name, run_lock.key)
                        return run_lock.skipped
                    return _measured(task.name, fn, call_args, kwargs)

        run.__name__ = fn.__name__
        run.__qualname__ = fn.__qualname__
        run.__module__ = fn.__module__
        run.__doc__ = fn.__doc__
        celery_app = app if app is not None else _workers_app()
        # The queue is not a task attribute (deprecated in Celery 5): `task_routes`, built from
        # the same TaskName constants (shared/infra/celery_config.py), sends it there, for
        # publishers that never import this module too.
        # shared=False: registered on this app only, not on every app the process creates.
        registered: Task = celery_app.task(
            name=task.name, bind=True, shared=False, **retry.celery_options()
        )(run)
        return registered

    return decorate


def _measured(name: str, fn: Callable[..., Any], args: tuple[Any, ...],
              kwargs: dict[str, Any]) -> Any:  # fmt: skip
    started = time.monotonic()
    error: str | None = None
    try:
        return fn(*args, **kwargs)
    except CONTROL_FLOW:
        raise
    except Exception as exc:
        error = type(exc).__name__
        raise
    finally:
        metrics.record_task_run(name, time.monotonic() - started, error)


def _workers_app() -> Celery:
    from workers.celery_app import app

    return app
