"""workers/instrumented.py `payouts_task`: name, queue, retry policy and run-lock declared
once; log context and duration/failure metrics for every task, with no code in its body.
And the real tasks: every name comes from shared/infra/task_names.py, values unchanged."""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fakeredis
import pytest
from celery import Celery, Task
from prometheus_client.core import HistogramMetricFamily
from sqlalchemy.orm import Session

from cli.addresses import external_address
from devnode.server import start_devnode
from shared.core.models import PayoutState, Route
from shared.infra import task_names
from shared.infra.celery_config import celery_settings
from shared.infra.db import get_engine
from shared.infra.settings import get_settings
from shared.infra.task_names import TaskName
from shared.node import NodeClient
from shared.node.errors import NodeUnavailable
from shared.ops import metrics
from tests.unit.shared.factories import make_payout, migrate_app_database
from workers import instrumented
from workers.instrumented import RetryPolicy, RunLock, payouts_task

JOB = TaskName("tests.instrumented.job", task_names.MAINTENANCE_QUEUE)


@pytest.fixture
def app() -> Celery:
    return Celery("tests-instrumented")


@pytest.fixture
def shared_redis(monkeypatch: pytest.MonkeyPatch) -> fakeredis.FakeRedis:
    """One fakeredis for the metrics counters and the tasks' locks."""
    client = fakeredis.FakeRedis()
    monkeypatch.setattr(metrics, "counter_redis", lambda: client)
    monkeypatch.setattr(instrumented, "task_redis", lambda: client)
    return client


def parsed(buffer: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def failures(client: fakeredis.FakeRedis) -> dict[str, int]:
    return metrics.read_counters(client)[metrics.TASK_FAILURES_KEY]


def durations(client: fakeredis.FakeRedis, task: str) -> metrics.TaskDurations:
    return metrics.read_task_durations(client)[task]


class TestDeclaration:
    def test_name_queue_and_retry_policy_reach_celery(self, app: Celery) -> None:
        policy = RetryPolicy(on=(NodeUnavailable,), max_retries=7, backoff=True,
                             backoff_max_seconds=42)  # fmt: skip

        @payouts_task(JOB, retry=policy, app=app)
        def job() -> None: ...

        assert app.tasks[JOB.name].name == job.name == JOB.name
        assert job.max_retries == 7
        assert job.autoretry_for == (NodeUnavailable,)
        assert (job.retry_backoff, job.retry_backoff_max) == (True, 42)

    def test_log_args_must_name_parameters(self, app: Celery) -> None:
        with pytest.raises(TypeError, match="payout"):

            @payouts_task(JOB, log_args=("payout",), app=app)
            def job(payout_id: str) -> None: ...

    def test_bind_passes_the_celery_task(self, app: Celery, shared_redis: object) -> None:
        @payouts_task(JOB, bind=True, app=app)
        def job(self: Task, value: int) -> str:
            return f"{self.name}:{value}"

        assert job.apply(args=[3]).get() == f"{JOB.name}:3"


class TestMetrics:
    def test_a_run_records_its_duration_in_the_shared_histogram(
        self, app: Celery, shared_redis: fakeredis.FakeRedis
    ) -> None:
        @payouts_task(JOB, app=app)
        def job() -> int:
            return 1

        job.apply().get()
        job.apply().get()

        figures = durations(shared_redis, JOB.name)
        assert figures.buckets[-1] == (float("inf"), 2)
        assert figures.buckets[0][1] == 2  # both well under the first bound
        assert 0 <= figures.total < 0.1
        assert failures(shared_redis) == {}

    def test_a_failure_is_counted_by_task_and_error_and_still_timed(
        self, app: Celery, shared_redis: fakeredis.FakeRedis
    ) -> None:
        @payouts_task(JOB, app=app)
        def job() -> None:
            raise ValueError("broken")

        result = job.apply()

        assert isinstance(result.result, ValueError)
        assert failures(shared_redis) == {f"{JOB.name}|ValueError": 1}
        assert durations(shared_redis, JOB.name).buckets[-1][1] == 1

    def test_each_retried_failure_counts_and_the_retries_follow_the_policy(
        self, app: Celery, shared_redis: fakeredis.FakeRedis
    ) -> None:
        calls = []

        @payouts_task(JOB, retry=RetryPolicy(on=(NodeUnavailable,), max_retries=2), app=app)
        def job() -> str:
            calls.append(1)
            if len(calls) < 3:
                raise NodeUnavailable("getbalance: refused", None)
            return "done"

        assert job.apply().get() == "done"  # eager: Celery re-runs the retries at once

        assert len(calls) == 3
        assert failures(shared_redis) == {f"{JOB.name}|NodeUnavailable": 2}

    def test_an_error_outside_the_policy_is_not_retried(
        self, app: Celery, shared_redis: fakeredis.FakeRedis
    ) -> None:
        calls = []

        @payouts_task(JOB, retry=RetryPolicy(on=(NodeUnavailable,), max_retries=5), app=app)
        def job() -> None:
            calls.append(1)
            raise KeyError("no")

        job.apply()

        assert len(calls) == 1
        assert failures(shared_redis) == {f"{JOB.name}|KeyError": 1}

    def test_celery_s_own_retry_is_not_a_failure(
        self, app: Celery, shared_redis: fakeredis.FakeRedis
    ) -> None:
        calls = []

        @payouts_task(JOB, bind=True, app=app)
        def job(self: Task) -> str:
            calls.append(1)
            if len(calls) == 1:
                raise self.retry(countdown=0, max_retries=None)
            return "done"

        assert job.apply().get() == "done"
        assert failures(shared_redis) == {}

    def test_the_scrape_shows_every_known_task_and_the_failures(
        self, shared_redis: fakeredis.FakeRedis
    ) -> None:
        metrics.record_task_run(task_names.SWEEP.name, 0.3)
        metrics.record_task_run(task_names.SWEEP.name, 700, "OperationalError")

        histogram = metrics.task_duration_metric(metrics.read_task_durations(shared_redis))
        [failed] = [m for m in metrics.counter_metrics(metrics.read_counters(shared_redis))
                    if m.name == "payouts_task_failures"]  # fmt: skip

        assert isinstance(histogram, HistogramMetricFamily)
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in histogram.samples}
        sweep = (("task", task_names.SWEEP.name),)
        assert samples[("payouts_task_duration_seconds_count", sweep)] == 2
        assert samples[("payouts_task_duration_seconds_sum", sweep)] == pytest.approx(700.3)
        assert samples[("payouts_task_duration_seconds_bucket",
                        (("le", "0.5"), *sweep))] == 1  # fmt: skip
        payout = (("task", task_names.PROCESS_PAYOUT.name),)
        assert samples[("payouts_task_duration_seconds_count", payout)] == 0
        [sample] = failed.samples
        assert sample.labels == {"task": task_names.SWEEP.name, "error": "OperationalError"}
        assert sample.value == 1


class TestRunLock:
    def test_a_held_lock_skips_the_run_without_timing_it(
        self, app: Celery, shared_redis: fakeredis.FakeRedis
    ) -> None:
        calls = []

        @payouts_task(JOB, run_lock=RunLock("maintenance:test", lambda: 30, skipped=-1),
                      app=app)  # fmt: skip
        def job() -> int:
            calls.append(1)
            return len(calls)

        shared_redis.set("maintenance:test", "someone else")
        assert job.apply().get() == -1
        shared_redis.delete("maintenance:test")
        assert job.apply().get() == 1

        assert calls == [1]
        assert durations(shared_redis, JOB.name).buckets[-1][1] == 1

    def test_the_lock_is_held_while_the_task_runs_and_released_after(
        self, app: Celery, shared_redis: fakeredis.FakeRedis
    ) -> None:
        seen = []

        @payouts_task(JOB, run_lock=RunLock("maintenance:test", lambda: 30), app=app)
        def job() -> None:
            seen.append((shared_redis.exists("maintenance:test"),
                         shared_redis.ttl("maintenance:test")))  # fmt: skip

        job.apply().get()

        [(held, ttl)] = seen
        assert held and 0 < ttl <= 30
        assert not shared_redis.exists("maintenance:test")


class TestLogContext:
    def test_a_line_logged_inside_a_task_carries_payout_task_and_worker(
        self, app: Celery, shared_redis: object, log_lines: io.StringIO
    ) -> None:
        @payouts_task(JOB, log_args=("payout_id",), app=app)
        def job(payout_id: str) -> None:
            logging.getLogger("shared.node.client").debug("node getbalance took 1.0 ms")

        result = job.apply(args=["p-42"], task_id="t-42")
        result.get()
        logging.getLogger("shared.node.client").debug("after the task")

        inside = [r for r in parsed(log_lines) if r["msg"].startswith("node getbalance")]
        [line] = inside
        assert (line["payout_id"], line["task_id"], line["task"]) == ("p-42", "t-42", JOB.name)
        assert line["worker"].endswith(f"/{__import__('os').getpid()}")
        [after] = [r for r in parsed(log_lines) if r["msg"] == "after the task"]
        assert "payout_id" not in after and "task_id" not in after


@pytest.fixture
def payout_world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                 shared_redis: fakeredis.FakeRedis) -> Iterator[uuid.UUID]:  # fmt: skip
    """SQLite, the simulated node in-process and one approved automatic payout."""
    monkeypatch.setenv("PAYOUTS_DATABASE_URL", f"sqlite:///{tmp_path / 'p.db'}")
    with start_devnode(host="127.0.0.1", port=0) as devnode:
        monkeypatch.setenv("PAYOUTS_BITCOIND_URL", devnode.wallet_url)
        node = NodeClient(devnode.wallet_url, timeout=2)
        node.call("generatetoaddress", 101, node.call("getnewaddress"))
        migrate_app_database()
        with Session(get_engine(), expire_on_commit=False) as session:
            payout = make_payout(session, state=PayoutState.APPROVED, route=Route.AUTOMATIC,
                                 amount_sats=50_000)  # fmt: skip
            payout.destination = external_address()
            session.commit()
            yield payout.id


def test_the_real_process_payout_task_s_node_client_lines_carry_the_context(
    payout_world: uuid.UUID, log_lines: io.StringIO
) -> None:
    from workers import tasks

    result = tasks.process_payout.apply(args=[str(payout_world)], task_id="task-1")

    assert result.get() == "broadcast"
    records = parsed(log_lines)
    node_lines = [r for r in records if r["logger"] == "shared.node.client"]
    assert node_lines, "the node client logged nothing at debug"
    for line in node_lines:
        assert line["payout_id"] == str(payout_world)
        assert line["task_id"] == "task-1"
        assert line["task"] == task_names.PROCESS_PAYOUT.name
        assert line["worker"]
    [claimed] = [r for r in records if r.get("to_state") == "claimed"]
    assert claimed["worker"].startswith("worker:")  # the state machine's own field wins
    assert claimed["actor"] == claimed["worker"]


class TestTaskNames:
    def test_the_names_are_the_ones_running_systems_know(self) -> None:
        assert [t.name for t in task_names.ALL_TASKS] == [
            "payouts.process_payout",
            "payouts.run_batches",
            "payouts.maintenance.sweep",
            "payouts.maintenance.rebroadcast",
            "payouts.maintenance.track_confirmations",
            "payouts.maintenance.release_orphaned_locks",
            "payouts.maintenance.bump_fees",
        ]

    def test_every_task_is_registered_with_its_queue_and_routed_there(self) -> None:
        from workers import tasks
        from workers.celery_app import app

        assert tasks.process_payout.name == task_names.PROCESS_PAYOUT.name
        routes = celery_settings(get_settings())["task_routes"]
        for task in task_names.ALL_TASKS:
            assert task.name in app.tasks
            assert routes[task.name] == {"queue": task.queue}
            assert app.amqp.router.route({}, task.name)["queue"].name == task.queue

    def test_the_beat_schedule_names_only_known_tasks_on_their_queues(self) -> None:
        from workers.celery_app import app

        known = {t.name: t.queue for t in task_names.ALL_TASKS}
        schedule = app.conf.beat_schedule
        assert {entry["task"] for entry in schedule.values()} == {
            t.name for t in task_names.ALL_TASKS if t.queue == task_names.MAINTENANCE_QUEUE
        }
        for entry in schedule.values():  # beat messages are routed like any other
            routed = app.amqp.router.route(entry["options"], entry["task"])
            assert routed["queue"].name == known[entry["task"]]

    def test_no_task_name_literal_outside_task_names(self) -> None:
        root = Path(__file__).resolve().parents[3]
        offenders = []
        for path in [*root.glob("*/**/*.py")]:
            if ".venv" in path.parts or path.name in ("task_names.py", Path(__file__).name):
                continue
            text = path.read_text(errors="replace")
            for task in task_names.ALL_TASKS:
                if f'"{task.name}"' in text or f"'{task.name}'" in text:
                    offenders.append(f"{path.relative_to(root)}: {task.name}")
        assert offenders == []
