"""Prometheus metrics for `/metrics`, correct however many worker processes and hosts run.

Nothing is kept in a process's memory: a worker's memory is invisible to the API that serves
`/metrics`, and is lost on restart. So:
- what only a worker sees happen (claim conflicts, broadcast outcomes, each task's failures
  and duration) is counted in Redis hashes with HINCRBY, which every process shares (a
  histogram is one hash: a count per bucket and the sum, written in one MULTI);
- what the database already records (states, transitions, approval→broadcast latency, the
  oldest unpaid approval, the size of the last day's transactions) is computed from it at
  scrape time;
- the hot-wallet balance is asked of the node at scrape time, with a short timeout.

Recording a metric must never break a payout: every Redis error is swallowed here.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import redis
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry
from sqlalchemy import ColumnElement, Float, case, cast, func, select
from sqlalchemy.orm import Session

from shared.core.models import Payout, PayoutEvent, PayoutState, Route, Transaction
from shared.infra.db import session_scope
from shared.infra.settings import get_settings
from shared.infra.task_names import ALL_TASKS
from shared.node import NodeClient
from shared.node.errors import NodeError

log = logging.getLogger(__name__)

CLAIM_CONFLICTS_KEY = "payouts:metrics:claim_conflicts"
BROADCAST_OUTCOMES_KEY = "payouts:metrics:broadcast_outcomes"
FEE_BUMPS_KEY = "payouts:metrics:fee_bumps"
# Fields "<task>|<error class>" (failures); "<task>|<bucket bound>" and "<task>|sum" (durations,
# each run counted in the one bucket it falls in; the scrape makes them cumulative).
TASK_FAILURES_KEY = "payouts:metrics:task_failures"
TASK_DURATION_KEY = "payouts:metrics:task_duration"
FIELD_SEPARATOR = "|"

# A metrics write sits on the payout path: if Redis is slow it must cost milliseconds, not
# the client's default seconds. A lost increment is an acceptable price.
RECORD_TIMEOUT_SECONDS = 0.5
# A scrape (Prometheus' default timeout is 10 s) must not hang on a slow node.
NODE_TIMEOUT_SECONDS = 2.0
# Approval→broadcast upper bounds: seconds for a healthy automatic payout, up to a day for a
# manual one waiting on a human signer.
LATENCY_BUCKETS = (1, 2, 5, 10, 30, 60, 120, 300, 900, 1800, 3600, 4 * 3600, 24 * 3600)
# A task run: milliseconds for a lock-skipped beat job, seconds for a payout, minutes for a
# rebroadcast or confirmation pass over a large backlog.
TASK_DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
# Payouts per transaction: 1 (BATCH_MAX_PAYOUTS=1, or a quiet hour) up to the 1,000 cap.
BATCH_SIZE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
# vbytes per payout: ~141 for one P2WPKH payout with change, towards an output's own size
# (31 P2WPKH, 43 P2TR) as the batch grows.
VBYTES_PER_PAYOUT_BUCKETS = (35, 40, 45, 50, 65, 80, 100, 125, 150, 200, 300, 500)
# The transaction-size figures look at transactions created this recently (one index range
# scan on ix_transactions_created, however long the table grows).
TX_FIGURES_WINDOW_SECONDS = 24 * 3600
# Approved, not yet on the network: the money has not left.
UNPAID_APPROVED = (PayoutState.APPROVED, PayoutState.CLAIMED, PayoutState.SIGNED)


class ClaimConflict(enum.StrEnum):
    LOCK_NOT_ACQUIRED = "lock_not_acquired"  # another worker holds the Redis lock
    CAS_LOST = "cas_lost"  # the claim compare-and-set found the payout not claimable
    LEASE_LOST = "lease_lost"  # the fenced persist found our claim token replaced


@lru_cache(maxsize=4)
def _redis_for(url: str) -> redis.Redis:
    return redis.Redis.from_url(
        url,
        socket_timeout=RECORD_TIMEOUT_SECONDS,
        socket_connect_timeout=RECORD_TIMEOUT_SECONDS,
        retry=Retry(NoBackoff(), 0),  # no client-side retries: a lost increment is fine
    )


def counter_redis() -> redis.Redis:
    """The Redis that holds the shared counters (PAYOUTS_REDIS_URL)."""
    return _redis_for(get_settings().redis_url)


def _increment(key: str, field: str, client: redis.Redis | None) -> None:
    try:
        (client or counter_redis()).hincrby(key, field, 1)
    except (RedisError, OSError) as exc:
        log.warning("metrics: could not count %s %s: %s", key, field, exc)


def record_claim_conflict(kind: ClaimConflict, client: redis.Redis | None = None) -> None:
    _increment(CLAIM_CONFLICTS_KEY, kind.value, client)


def record_broadcast_outcome(outcome: str, client: redis.Redis | None = None) -> None:
    _increment(BROADCAST_OUTCOMES_KEY, outcome, client)


def record_fee_bump(method: str, client: redis.Redis | None = None) -> None:
    """A persisted fee bump, by method (`rbf`, `cpfp`)."""
    _increment(FEE_BUMPS_KEY, method, client)


def record_task_run(
    task: str, seconds: float, error: str | None = None, client: redis.Redis | None = None
) -> None:
    """One task run: its duration and, when it ended in an exception (`error`: the class name,
    retried or not), the failure — one Redis round trip, on every run of every task."""
    bound = next((b for b in TASK_DURATION_BUCKETS if seconds <= b), float("inf"))
    try:
        pipe = (client or counter_redis()).pipeline(transaction=True)
        pipe.hincrby(TASK_DURATION_KEY, f"{task}{FIELD_SEPARATOR}{_le(bound)}", 1)
        pipe.hincrbyfloat(TASK_DURATION_KEY, f"{task}{FIELD_SEPARATOR}sum", max(0.0, seconds))
        if error is not None:
            pipe.hincrby(TASK_FAILURES_KEY, f"{task}{FIELD_SEPARATOR}{error}", 1)
        pipe.execute()
    except (RedisError, OSError) as exc:
        log.warning("metrics: could not record a run of %s: %s", task, exc)


def read_counters(client: redis.Redis) -> dict[str, dict[str, int]]:
    """The counter hashes as {key: {label: count}}; raises RedisError when unreachable."""
    return {
        key: {_text(f): int(v) for f, v in client.hgetall(key).items()}
        for key in (CLAIM_CONFLICTS_KEY, BROADCAST_OUTCOMES_KEY, FEE_BUMPS_KEY, TASK_FAILURES_KEY)
    }


@dataclass(frozen=True)
class TaskDurations:
    buckets: list[tuple[float, int]]  # cumulative, last bound +Inf
    total: float


def read_task_durations(client: redis.Redis) -> dict[str, TaskDurations]:
    """{task: its duration histogram}, every known task included (zeros when it never ran)."""
    per_bucket: dict[str, dict[str, int]] = {task.name: {} for task in ALL_TASKS}
    totals: dict[str, float] = {}
    for raw_field, raw_value in client.hgetall(TASK_DURATION_KEY).items():
        task, _, part = _text(raw_field).rpartition(FIELD_SEPARATOR)
        if part == "sum":
            totals[task] = float(raw_value)
        else:
            per_bucket.setdefault(task, {})[part] = int(raw_value)
    histograms = {}
    for task, counts in per_bucket.items():
        running, buckets = 0, []
        for bound in (*TASK_DURATION_BUCKETS, float("inf")):
            running += counts.get(_le(bound), 0)
            buckets.append((float(bound), running))
        histograms[task] = TaskDurations(buckets, totals.get(task, 0.0))
    return histograms


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


@dataclass(frozen=True)
class Histogram:
    buckets: list[tuple[float, int]]  # cumulative, last bound +Inf (its count: every sample)
    total: float


@dataclass(frozen=True)
class DatabaseFigures:
    by_state: dict[str, int]
    transitions: dict[tuple[str, str], int]  # (from_state or "none", to_state) -> count
    latency_buckets: list[tuple[float, int]]  # cumulative, last bound +Inf
    latency_sum: float
    oldest_unpaid_age: dict[str, float]  # route -> seconds
    batch_size: Histogram  # payouts per transaction, last TX_FIGURES_WINDOW_SECONDS
    vbytes_per_payout: Histogram  # vsize / payouts, same transactions (those with a vsize)


def read_database_figures(now: float) -> DatabaseFigures:
    """Everything `/metrics` derives from PostgreSQL, in one short read-only session."""
    with session_scope() as session:
        by_state = {state.value: 0 for state in PayoutState}
        for state, count in session.execute(
            select(Payout.state, func.count()).group_by(Payout.state)
        ):
            by_state[state] = count
        transitions = {
            (source or "none", target): count
            for source, target, count in session.execute(
                select(PayoutEvent.from_state, PayoutEvent.to_state, func.count()).group_by(
                    PayoutEvent.from_state, PayoutEvent.to_state
                )
            )
        }
        buckets, total = _approval_to_broadcast(session)
        oldest = {route.value: 0.0 for route in Route}
        for route, approved_at in session.execute(
            select(Payout.route, func.min(Payout.approved_at))
            .where(Payout.state.in_(UNPAID_APPROVED), Payout.approved_at.is_not(None))
            .group_by(Payout.route)
        ):
            if route is not None and approved_at is not None:
                oldest[route] = max(0.0, now - _as_utc(approved_at).timestamp())
        batch_size, vbytes_per_payout = _transaction_sizes(session, now)
    return DatabaseFigures(
        by_state, transitions, buckets, total, oldest, batch_size, vbytes_per_payout
    )


def _as_utc(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes; every stored time is UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _seconds_between(dialect: str, start: Any, end: Any) -> ColumnElement[Any]:
    if dialect == "postgresql":
        return func.extract("epoch", end - start)
    return (func.julianday(end) - func.julianday(start)) * 86400.0  # SQLite (unit tests)


def _approval_to_broadcast(session: Session) -> tuple[list[tuple[float, int]], float]:
    """Cumulative histogram buckets computed in SQL, so only counts cross the wire.

    A payout moves signed → broadcast once, so that audit row is its first broadcast. The two
    times come from different hosts (API, worker); a negative difference from clock skew
    counts as 0.
    """
    raw = _seconds_between(session.get_bind().dialect.name, Payout.approved_at, PayoutEvent.at)
    sample = (
        select(case((raw < 0, 0.0), else_=raw).label("s"))
        .join(Payout, Payout.id == PayoutEvent.payout_id)
        .where(
            PayoutEvent.from_state == PayoutState.SIGNED,
            PayoutEvent.to_state == PayoutState.BROADCAST,
            Payout.approved_at.is_not(None),
        )
        .subquery()
    )
    seconds = sample.c.s
    row = session.execute(
        select(
            func.count(),
            func.coalesce(func.sum(seconds), 0.0),
            *(
                func.coalesce(func.sum(case((seconds <= b, 1), else_=0)), 0)
                for b in LATENCY_BUCKETS
            ),
        ).select_from(sample)
    ).one()
    count, total, *within = row
    buckets = [(float(b), int(n)) for b, n in zip(LATENCY_BUCKETS, within, strict=True)]
    return [*buckets, (float("inf"), int(count))], float(total)


def _cumulative(bounds: tuple[float, ...], within: list[Any], count: Any, total: Any) -> Histogram:
    buckets = [(float(b), int(n or 0)) for b, n in zip(bounds, within, strict=True)]
    return Histogram([*buckets, (float("inf"), int(count or 0))], float(total or 0))


def _transaction_sizes(session: Session, now: float) -> tuple[Histogram, Histogram]:
    """Payouts per transaction and vbytes per payout, over the transactions created in the
    last TX_FIGURES_WINDOW_SECONDS that still pay a payout (a dead batch's re-queued payouts
    no longer point at it). Counted in SQL, one row back. A row without a vsize (stored
    before migration 0003) counts in the batch size only."""
    since = datetime.fromtimestamp(now - TX_FIGURES_WINDOW_SECONDS, UTC)
    per_tx = (
        select(Transaction.vsize.label("vsize"), func.count(Payout.id).label("n"))
        .join(Payout, Payout.tx_id == Transaction.id)
        .where(Transaction.created_at >= since)
        .group_by(Transaction.id, Transaction.vsize)
        .subquery()
    )
    size = per_tx.c.n
    per_payout = cast(per_tx.c.vsize, Float) / size  # NULL without a vsize
    row = session.execute(
        select(
            func.count(),
            func.coalesce(func.sum(size), 0),
            *(
                func.coalesce(func.sum(case((size <= b, 1), else_=0)), 0)
                for b in BATCH_SIZE_BUCKETS
            ),
            func.count(per_payout),
            func.coalesce(func.sum(per_payout), 0.0),
            *(
                func.coalesce(func.sum(case((per_payout <= b, 1), else_=0)), 0)
                for b in VBYTES_PER_PAYOUT_BUCKETS
            ),
        ).select_from(per_tx)
    ).one()
    transactions, payouts, *rest = row
    size_within, (sampled, vbytes, *vbytes_within) = (
        rest[: len(BATCH_SIZE_BUCKETS)],
        rest[len(BATCH_SIZE_BUCKETS) :],
    )
    return (
        _cumulative(BATCH_SIZE_BUCKETS, size_within, transactions, payouts),
        _cumulative(VBYTES_PER_PAYOUT_BUCKETS, vbytes_within, sampled, vbytes),
    )


class PayoutsCollector(Collector):
    """Reads the three sources at every scrape. A source that fails is reported as down in
    `payouts_metrics_source_up` and its metrics are left out, so one outage never hides the
    others (the hot-wallet balance falls back to the last value read)."""

    def __init__(self) -> None:
        self._balance: tuple[str, int] | None = None  # (node URL, sats) of the last good read

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "payouts_metrics_source_up",
            "1 when this scrape could read the source (database, redis, node), else 0",
            labels=["source"],
        )
        for source, read in (
            ("database", self._database),
            ("redis", self._counters),
            ("node", self._node),
        ):
            metrics, ok = read()
            yield from metrics
            up.add_metric([source], 1.0 if ok else 0.0)
        yield up

    def _database(self) -> tuple[list[Metric], bool]:
        try:
            figures = read_database_figures(time.time())
        except Exception as exc:  # any driver error: report the source down, keep serving
            log.warning("metrics: database unreadable: %s", type(exc).__name__)
            return [], False
        return database_metrics(figures), True

    def _counters(self) -> tuple[list[Metric], bool]:
        try:
            client = counter_redis()
            counts = read_counters(client)
            durations = read_task_durations(client)
        except (RedisError, OSError) as exc:
            log.warning("metrics: redis unreadable: %s", type(exc).__name__)
            return [], False
        return [*counter_metrics(counts), task_duration_metric(durations)], True

    def _node(self) -> tuple[list[Metric], bool]:
        settings = get_settings()
        url = settings.bitcoind_url.get_secret_value()
        ok = True
        try:
            node = NodeClient(url, timeout=NODE_TIMEOUT_SECONDS, read_retries=0)
            self._balance = (url, node.get_balance_sats())
        except (NodeError, ValueError) as exc:
            log.warning("metrics: node unreadable: %s", type(exc).__name__)
            ok = False
        if self._balance is None or self._balance[0] != url:
            return [], ok
        balance = GaugeMetricFamily(
            "payouts_hot_wallet_balance_sats",
            "Trusted balance of the hot wallet (last value read when the node is down)",
            value=self._balance[1],
        )
        return [balance], ok


def counter_metrics(counts: dict[str, dict[str, int]]) -> list[Metric]:
    conflicts = CounterMetricFamily(
        "payouts_claim_conflicts",
        "process_payout messages that found the payout held elsewhere, by kind",
        labels=["kind"],
    )
    stored = counts.get(CLAIM_CONFLICTS_KEY, {})
    for kind in ClaimConflict:
        conflicts.add_metric([kind.value], stored.get(kind.value, 0))
    outcomes = CounterMetricFamily(
        "payouts_broadcast_outcomes",
        "sendrawtransaction attempts of persisted transactions, by outcome",
        labels=["outcome"],
    )
    for outcome, count in sorted(counts.get(BROADCAST_OUTCOMES_KEY, {}).items()):
        outcomes.add_metric([outcome], count)
    bumps = CounterMetricFamily(
        "payouts_fee_bumps",
        "Fee bumps persisted (a new version of a stuck transaction), by method: rbf, cpfp",
        labels=["method"],
    )
    for method in ("rbf", "cpfp"):
        bumps.add_metric([method], counts.get(FEE_BUMPS_KEY, {}).get(method, 0))
    failures = CounterMetricFamily(
        "payouts_task_failures",
        "Task runs that ended in an exception (retried or not), by task and exception class",
        labels=["task", "error"],
    )
    for field, count in sorted(counts.get(TASK_FAILURES_KEY, {}).items()):
        task, _, error = field.rpartition(FIELD_SEPARATOR)
        failures.add_metric([task, error], count)
    return [conflicts, outcomes, bumps, failures]


def task_duration_metric(durations: dict[str, TaskDurations]) -> Metric:
    histogram = HistogramMetricFamily(
        "payouts_task_duration_seconds",
        "Wall time of each task run that did its work (a beat job skipped by its run-lock "
        "is not counted), success or failure",
        labels=["task"],
    )
    for task, figures in sorted(durations.items()):
        histogram.add_metric(
            [task],
            buckets=[(_le(bound), count) for bound, count in figures.buckets],
            sum_value=figures.total,
        )
    return histogram


def database_metrics(figures: DatabaseFigures) -> list[Metric]:
    by_state = GaugeMetricFamily(
        "payouts_by_state", "Payouts currently in each state", labels=["state"]
    )
    for state, count in sorted(figures.by_state.items()):
        by_state.add_metric([state], count)
    transitions = CounterMetricFamily(
        "payouts_transitions",
        "State transitions recorded in the audit trail (from_state 'none': created)",
        labels=["from_state", "to_state"],
    )
    for (source, target), count in sorted(figures.transitions.items()):
        transitions.add_metric([source, target], count)
    latency = HistogramMetricFamily(
        "payouts_approval_to_broadcast_seconds",
        "Time from approval to the first broadcast of the payout's transaction",
        buckets=[(_le(bound), count) for bound, count in figures.latency_buckets],
        sum_value=figures.latency_sum,
    )
    oldest = GaugeMetricFamily(
        "payouts_oldest_unpaid_approval_age_seconds",
        "Age of the oldest approved payout not yet broadcast (0 when none), by route",
        labels=["route"],
    )
    for route, age in sorted(figures.oldest_unpaid_age.items()):
        oldest.add_metric([route], age)
    batch_size = HistogramMetricFamily(
        "payouts_batch_size",
        "Payouts per transaction, over the transactions created in the last 24 h that pay any",
        buckets=[(_le(bound), count) for bound, count in figures.batch_size.buckets],
        sum_value=figures.batch_size.total,
    )
    vbytes = HistogramMetricFamily(
        "payouts_tx_vbytes_per_payout",
        "Virtual size of a transaction divided by the payouts it pays, over the same "
        "transactions (those stored with their vsize)",
        buckets=[(_le(bound), count) for bound, count in figures.vbytes_per_payout.buckets],
        sum_value=figures.vbytes_per_payout.total,
    )
    return [by_state, transitions, latency, oldest, batch_size, vbytes]


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


@lru_cache(maxsize=1)
def registry() -> CollectorRegistry:
    """The registry `/metrics` serves: one collector per process, reading shared sources."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(PayoutsCollector())
    return reg
