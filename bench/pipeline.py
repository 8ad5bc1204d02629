"""Sections 2 and 6: approved payouts paid by W real workers, approval → `broadcast`.

Payouts are created and approved in the database with the same `shared.intake.payouts` calls the
API makes (one transaction per approval), then their `process_payout` messages are published
with `shared.sending.dispatch.enqueue_process_payout`, all at once, as the no-op baseline publishes
its tasks. The clock starts when a payout's message is published (the approve route publishes
right after its commit; the approval's own cost is the API's, section 4) and stops at the
`at` of the payout's `broadcast` row in `payout_events`, stamped by the worker that did it,
so the bench's own polling never adds to a latency.

Approving all payouts before publishing any keeps the run a true burst: approving while
publishing would pace arrivals by how much CPU the bench gets, which is not the pipeline's
speed.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from sqlalchemy import func, select

from bench.procfs import CpuMeter, with_children
from bench.services import database_backends, devnode_process
from bench.stats import RunStats, median_run, summarize
from bench.workers import PIPELINE_APP, running_workers
from cli.addresses import external_address
from cli.funding import fund_wallet
from cli.processes import wait_until
from cli.regtest_node import RegtestNode
from shared.core.models import Payout, PayoutEvent, PayoutState
from shared.infra.db import session_scope
from shared.infra.unit_of_work import UnitOfWork
from shared.intake import payouts as intake
from shared.sending.dispatch import enqueue_process_payout

APPROVER = "bench-approver"
CREATOR = "bench-backend"
PAYOUT_SATS = 10_000
# Every funding coin pays exactly one payout (single payout per transaction); a few spare.
COIN_SATS = 1_000_000
SPARE_COINS = 10
# Per payout, generously: the simulated node adds no latency, so a payout taking longer than
# this means the pipeline is stuck (and the run should stop, not hang).
SECONDS_PER_PAYOUT_LIMIT = 2.0
POLL_SECONDS = 0.25
LIGHT_POLL_SECONDS = 0.005
S = PayoutState
DONE = (S.BROADCAST, S.CONFIRMED)
STUCK = (S.FAILED, S.CANCELLED)


@dataclass(frozen=True)
class PipelineResult:
    drained: RunStats
    light: RunStats | None
    worker_rss_mb: float
    worker_rss_role: str
    worker_rss_by_role: dict[str, float]


def create_payouts(count: int) -> list[uuid.UUID]:
    with session_scope() as session:
        ids = []
        for _ in range(count):
            payout, _created = intake.create_payout_idempotent(
                session, CREATOR, uuid.uuid4().hex, external_address("regtest"), PAYOUT_SATS,
                None,
            )
            ids.append(payout.id)
    return ids


def approve(payout_id: uuid.UUID) -> None:
    """The database half of `POST /v1/payouts/{id}/approve`: approve and commit.

    The session is committed directly, not through the unit of work, so the publish hook
    `approve` registers is dropped on purpose: `publish` sends every message at once."""
    with session_scope() as session:
        _payout, route = intake.approve(UnitOfWork(session), payout_id, APPROVER)
    if route != "automatic":
        raise RuntimeError(f"payout {payout_id} took the {route} route; check AUTO_* limits")


def publish(ids: list[uuid.UUID]) -> dict[uuid.UUID, float]:
    """The other half: publish `process_payout`; returns when each message was sent."""
    sent = {}
    for payout_id in ids:
        sent[payout_id] = time.time()
        enqueue_process_payout(payout_id)
    return sent


def _states(ids: list[uuid.UUID]) -> dict[str, int]:
    with session_scope() as session:
        rows = session.execute(
            select(Payout.state, func.count()).where(Payout.id.in_(ids)).group_by(Payout.state)
        )
        return {str(state): int(n) for state, n in rows}


def wait_paid(ids: list[uuid.UUID], timeout: float, interval: float = POLL_SECONDS) -> None:
    def all_broadcast() -> bool:
        states = _states(ids)
        stuck = {s: n for s, n in states.items() if s in STUCK}
        if stuck:
            raise RuntimeError(f"payouts ended without being sent: {stuck}")
        return sum(states.get(s, 0) for s in DONE) == len(ids)

    wait_until(all_broadcast, timeout, f"{len(ids)} payouts to reach broadcast", interval)


def _ends(ids: list[uuid.UUID]) -> list[float]:
    with session_scope() as session:
        broadcast = dict(
            session.execute(
                select(PayoutEvent.payout_id, func.min(PayoutEvent.at))
                .where(PayoutEvent.payout_id.in_(ids), PayoutEvent.to_state == S.BROADCAST)
                .group_by(PayoutEvent.payout_id)
            ).tuples().all()
        )
    return [broadcast[payout_id].timestamp() for payout_id in ids]


def _drain(count: int, workers: int, meter: CpuMeter | None = None) -> RunStats:
    ids = create_payouts(count)
    for payout_id in ids:
        approve(payout_id)
    if meter:
        meter.start()
    sent = publish(ids)
    wait_paid(ids, 10 + count * SECONDS_PER_PAYOUT_LIMIT)
    cpu = meter.per_item(count) if meter else {}
    stats = summarize([sent[i] for i in ids], _ends(ids), workers)
    return replace(stats, cpu_ms=cpu)


def _one_in_flight(count: int) -> RunStats:
    ids = create_payouts(count)
    sent: dict[uuid.UUID, float] = {}
    for payout_id in ids:
        approve(payout_id)
        sent.update(publish([payout_id]))
        wait_paid([payout_id], 10 + SECONDS_PER_PAYOUT_LIMIT, LIGHT_POLL_SECONDS)
    return summarize([sent[i] for i in ids], _ends(ids), 1)


def run_pipeline(
    payouts: int, workers: int, light_load: int, repeat: int, env: Mapping[str, str],
    workdir: Path,
) -> PipelineResult:
    """One pipeline run on a node of its own: every run starts from the same wallet (the
    simulated node's coin selection scans the whole wallet history, so a shared node would
    make later runs slower for reasons that are not the pipeline's)."""
    with devnode_process(workdir) as node:
        coins = repeat * payouts + 2 * workers + light_load + SPARE_COINS
        fund_wallet(RegtestNode(node.wallet_url), coins, COIN_SATS)
        run_env = {**env, "PAYOUTS_BITCOIND_URL": node.wallet_url}
        with running_workers(PIPELINE_APP, workers, run_env, workdir) as pool:
            _drain(2 * workers, workers)  # warm-up: DB pool, node connection, imports
            meter = CpuMeter({
                "workers": lambda: with_children(pool.pids),
                "node": lambda: [node.pid],
                "postgres": database_backends,
            })
            drained = median_run([_drain(payouts, workers, meter) for _ in range(repeat)])
            light = _one_in_flight(light_load) if light_load else None
            peak = pool.peak_rss()
            by_role = pool.peak_rss_by_role()
    return PipelineResult(
        drained=drained,
        light=light,
        worker_rss_mb=peak.mb if peak else float("nan"),
        worker_rss_role=f"{peak.role} pid {peak.pid}" if peak else "unknown",
        worker_rss_by_role=by_role,
    )
