"""Section 1: the no-op task drained by W workers, and its enqueue→executed latency."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import redis
from celery import Celery

from bench.noop_tasks import DONE_LIST, publish
from bench.procfs import CpuMeter, with_children
from bench.stats import RunStats, median_run, summarize
from bench.workers import NOOP_APP, running_workers
from cli.processes import wait_until
from shared.infra.celery_config import make_celery
from shared.infra.settings import get_settings

# Per task, generously: a no-op that takes longer than this means something is broken.
SECONDS_PER_TASK_LIMIT = 0.5
ONE_TASK_TIMEOUT_SECONDS = 30


def _stamps(client: redis.Redis) -> tuple[list[float], list[float]]:
    rows = [json.loads(raw) for raw in client.lrange(DONE_LIST, 0, -1)]
    client.delete(DONE_LIST)
    return [float(r[0]) for r in rows], [float(r[1]) for r in rows]


def _drain(
    client: redis.Redis, publisher: Celery, count: int, workers: int,
    meter: CpuMeter | None = None,
) -> RunStats:
    client.delete(DONE_LIST)
    if meter:
        meter.start()
    publish(publisher, count)
    wait_until(lambda: client.llen(DONE_LIST) >= count,
               10 + count * SECONDS_PER_TASK_LIMIT, f"{count} no-op tasks", interval=0.05)
    cpu = meter.per_item(count) if meter else {}
    starts, ends = _stamps(client)
    return replace(summarize(starts, ends, workers), cpu_ms=cpu)


def _one_in_flight(client: redis.Redis, publisher: Celery, count: int) -> RunStats:
    """Latency with an idle queue: send one, wait for it, repeat."""
    client.delete(DONE_LIST)
    starts, ends = [], []
    for _ in range(count):
        publish(publisher, 1)
        popped = client.blpop([DONE_LIST], timeout=ONE_TASK_TIMEOUT_SECONDS)
        if popped is None:
            raise TimeoutError("a single no-op task did not run within "
                               f"{ONE_TASK_TIMEOUT_SECONDS}s")
        sent, done = json.loads(popped[1])
        starts.append(float(sent))
        ends.append(float(done))
    return summarize(starts, ends, 1)


def run_baseline(
    tasks: int, workers: int, light_load: int, repeat: int, env: Mapping[str, str],
    workdir: Path,
) -> tuple[RunStats, RunStats, float]:
    """(drain stats, one-in-flight stats, peak worker RSS MB)."""
    client = redis.Redis.from_url(get_settings().redis_url, socket_timeout=10)
    publisher = make_celery("bench-publisher")
    try:
        with running_workers(NOOP_APP, workers, env, workdir) as pool:
            _drain(client, publisher, 2 * workers, workers)  # warm-up: connections, imports
            meter = CpuMeter({"workers": lambda: with_children(pool.pids)})
            drained = median_run(
                [_drain(client, publisher, tasks, workers, meter) for _ in range(repeat)]
            )
            light = _one_in_flight(client, publisher, light_load)
            peak = pool.peak_rss()
    finally:
        client.close()
    return drained, light, peak.mb if peak else float("nan")
