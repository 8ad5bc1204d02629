"""Sections 2 and 6: a burst of approved payouts paid by the batcher, approval → `broadcast`.

Payouts are created and approved in the database with the same `shared.intake.payouts` calls the
API makes, then `shared.sending.dispatch.enqueue_process_payout` is called for each of them, all
at once, as the no-op baseline publishes its tasks. That call coalesces (one message while a
wake-up is outstanding), so a burst of N approvals publishes a handful of messages and one
batch run pays them all, PAYOUTS_BATCH_MAX_PAYOUTS per transaction. The clock starts when a
payout's enqueue call is made (the approve route makes it right after its commit; the
approval's own cost is the API's, section 4) and stops at the `at` of the payout's `broadcast`
row in `payout_events`, stamped by the worker that did it, so the bench's own polling never
adds to a latency.

Approving all payouts before publishing any keeps the run a true burst: approving while
publishing would pace arrivals by how much CPU the bench gets, which is not the pipeline's
speed. It also makes PAYOUTS_BATCH_WINDOW_SECONDS moot for the burst (the oldest approval is
older than the window by the time the run starts), so the window only shows in the one in
flight rows.
"""

from __future__ import annotations

import math
import os
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import func, insert, select, text

from bench.procfs import CpuMeter, with_children
from bench.services import database_backends, devnode_process
from bench.stats import RunStats, median_run, summarize
from bench.workers import PIPELINE_APP, running_workers
from cli.addresses import external_address
from cli.caches import reset_process_caches
from cli.funding import fund_wallet
from cli.processes import wait_until
from cli.regtest_node import RegtestNode
from shared.core.models import Payout, PayoutEvent, PayoutState, Route, Transaction, utcnow
from shared.infra.db import session_scope
from shared.infra.settings import get_settings
from shared.infra.unit_of_work import UnitOfWork
from shared.intake import payouts as intake
from shared.node import NodeClient
from shared.sending.batch_signals import BatchSignals, wallet_name
from shared.sending.dispatch import enqueue_process_payout

APPROVER = "bench-approver"
CREATOR = "bench-backend"
PAYOUT_SATS = 10_000
# Rows per INSERT statement when a burst is written in bulk.
ROWS_PER_INSERT = 1000
# Funding: bigger coins than one per payout. The wallet picks the largest confirmed coin
# first and then the largest trusted change, so with C coins the batches spread over C change
# chains about evenly: a run of B batches chains at most ceil(B / C) unconfirmed transactions
# per coin. Keeping that at CHAIN_DEPTH stays well inside Core's mempool limits (25
# ancestors or descendants, 101 kvB of them: 10 batches of 250 outputs are ~79 kvB).
CHAIN_DEPTH = 10
SPARE_COINS = 10
# What one batch costs a coin beyond its payments: fee at a few sat/vB for up to ~8 kvB.
FEE_ALLOWANCE_SATS = 100_000
# Per payout, generously: the simulated node adds no latency, so a payout taking longer than
# this means the pipeline is stuck (and the run should stop, not hang).
SECONDS_PER_PAYOUT_LIMIT = 0.5
REPEAT_MAX_TRANSACTIONS = 250
# Warm-up bursts at most (each one batch of 2 payouts) until every worker has run a batch.
WARM_UP_ROUNDS = 20
POLL_SECONDS = 0.25
LIGHT_POLL_SECONDS = 0.005
IDLE_TIMEOUT_SECONDS = 60
S = PayoutState
STUCK = (S.FAILED, S.CANCELLED)
NOT_DONE = [s for s in S if s not in (S.BROADCAST, S.CONFIRMED)]


@dataclass(frozen=True)
class Funding:
    coins: int
    coin_sats: int


def funding_for(batches: int, batch_size: int) -> Funding:
    """Enough coins that `batches` transactions of `batch_size` payouts never chain more than
    CHAIN_DEPTH deep on one coin, each coin big enough for its share of them (twice over)."""
    coins = math.ceil(batches / CHAIN_DEPTH) + SPARE_COINS
    per_batch = batch_size * PAYOUT_SATS + FEE_ALLOWANCE_SATS
    return Funding(coins, 2 * CHAIN_DEPTH * per_batch)


def batches_for(payouts: int, batch_size: int) -> int:
    return math.ceil(payouts / batch_size)


def repeats_for(payouts: int, batch_size: int, repeat: int) -> int:
    """Bursts of more than REPEAT_MAX_TRANSACTIONS transactions run once: at batch 1 a burst
    of 2,000 is 2,000 transactions, minutes of wall time, and each repetition on the same node
    would find a mempool 2,000 transactions longer than the one before."""
    return repeat if batches_for(payouts, batch_size) <= REPEAT_MAX_TRANSACTIONS else 1


@dataclass(frozen=True)
class Paid:
    """What the node says the transactions of one burst weigh."""

    payouts: int
    transactions: int
    vbytes: int
    fee_sats: int

    @property
    def vbytes_per_payout(self) -> float:
        return self.vbytes / self.payouts if self.payouts else math.nan

    @property
    def payouts_per_transaction(self) -> float:
        return self.payouts / self.transactions if self.transactions else math.nan

    @property
    def fee_sats_per_payout(self) -> float:
        return self.fee_sats / self.payouts if self.payouts else math.nan


@dataclass(frozen=True)
class PipelineResult:
    batch_size: int
    drained: RunStats
    paid: Paid
    light: RunStats | None
    worker_rss_mb: float
    worker_rss_role: str
    worker_rss_by_role: dict[str, float]
    prepare_seconds: float  # creating and approving the measured burst(s): set-up, not timed


class Burst:
    """One burst's payouts, told apart from the others in the database by their creator."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.creator = f"{CREATOR}-{uuid.uuid4().hex[:8]}"
        self.ids: list[uuid.UUID] = []

    def prepare(self, *, via_intake: bool = False) -> None:
        """Create and approve every payout; nothing is published yet.

        Measured bursts are written in bulk (`approved_rows`): going through
        `shared.intake` one payout at a time costs ~10 ms each here and grows with every
        approval of the last 24 h (the daily budget sum), which made preparing the bursts
        five minutes of a ten-minute run. Warm-ups go `via_intake`, the API's own calls, so
        every run also pays payouts made the real way; an integration test checks that both
        leave the same rows."""
        if via_intake:
            self.ids = create_and_approve(self.creator, self.count)
            return
        payouts, events = approved_rows(self.creator, self.count)
        with session_scope() as session:
            for start in range(0, self.count, ROWS_PER_INSERT):
                session.execute(insert(Payout), payouts[start:start + ROWS_PER_INSERT])
            for start in range(0, len(events), ROWS_PER_INSERT):
                session.execute(insert(PayoutEvent), events[start:start + ROWS_PER_INSERT])
        with session_scope() as session:
            # Thousands of rows at once would start autoanalyze inside the measured window
            # (its CPU counts as the database's); over the hours real approvals take, the
            # statistics would have followed.
            session.execute(text("ANALYZE payouts, payout_events"))
        self.ids = [row["id"] for row in payouts]

    def not_done(self) -> dict[str, int]:
        """This burst's payouts by state, for the states short of `broadcast` only: the
        (state, created_at) index finds those, so a poll costs the unpaid rows, not the
        table (the bench polls while it is measured, on the same cores)."""
        with session_scope() as session:
            rows = session.execute(
                select(Payout.state, func.count())
                .where(Payout.state.in_(NOT_DONE), Payout.created_by == self.creator)
                .group_by(Payout.state)
            )
            return {str(state): int(n) for state, n in rows}

    def wait_paid(self, timeout: float, interval: float = POLL_SECONDS) -> None:
        def all_broadcast() -> bool:
            states = self.not_done()
            stuck = {s: n for s, n in states.items() if s in STUCK}
            if stuck:
                raise RuntimeError(f"payouts ended without being sent: {stuck}")
            return not states

        wait_until(all_broadcast, timeout, f"{self.count} payouts to reach broadcast", interval)

    def ends(self) -> dict[uuid.UUID, float]:
        with session_scope() as session:
            rows = session.execute(
                select(PayoutEvent.payout_id, func.min(PayoutEvent.at))
                .join(Payout, Payout.id == PayoutEvent.payout_id)
                .where(Payout.created_by == self.creator, PayoutEvent.to_state == S.BROADCAST)
                .group_by(PayoutEvent.payout_id)
            ).tuples().all()
        return {payout_id: at.timestamp() for payout_id, at in rows}

    def claimers(self) -> set[str]:
        """The worker processes whose batch runs claimed this burst's payouts."""
        with session_scope() as session:
            return set(session.execute(
                select(PayoutEvent.actor).distinct()
                .join(Payout, Payout.id == PayoutEvent.payout_id)
                .where(Payout.created_by == self.creator, PayoutEvent.to_state == S.CLAIMED)
            ).scalars())  # fmt: skip

    def paid(self, node: NodeClient) -> Paid:
        """Every transaction paying this burst, weighed by the node (decoderawtransaction of
        the bytes the worker stored), and how many of the burst's payouts each pays."""
        with session_scope() as session:
            rows = session.execute(
                select(Transaction.raw_hex, Transaction.fee_sats, func.count(Payout.id))
                .join(Payout, Payout.tx_id == Transaction.id)
                .where(Payout.created_by == self.creator)
                .group_by(Transaction.id)
            ).tuples().all()
        vbytes = sum(node.decode_raw_transaction(raw).vsize for raw, _fee, _n in rows)
        return Paid(
            payouts=sum(n for _raw, _fee, n in rows), transactions=len(rows), vbytes=vbytes,
            fee_sats=sum(fee for _raw, fee, _n in rows),
        )  # fmt: skip


def create_and_approve(creator: str, count: int) -> list[uuid.UUID]:
    """What `POST /v1/payouts` and `POST /v1/payouts/{id}/approve` do in the database, one
    transaction per approval. The approvals' publish hooks are dropped on purpose (the session
    is committed directly, not through the unit of work): `publish` makes the enqueue calls."""
    ids = []
    with session_scope() as session:
        for _ in range(count):
            payout, _created = intake.create_payout_idempotent(
                session, creator, uuid.uuid4().hex, external_address("regtest"), PAYOUT_SATS,
                None,
            )  # fmt: skip
            ids.append(payout.id)
    for payout_id in ids:
        with session_scope() as session:
            _payout, route = intake.approve(UnitOfWork(session), payout_id, APPROVER)
        if route != Route.AUTOMATIC:
            raise RuntimeError(f"payout {payout_id} took the {route} route; check AUTO_* limits")
    return ids


def approved_rows(creator: str, count: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The `payouts` and `payout_events` rows that creating and approving `count` payouts for
    the automatic route leaves, oldest first (claims take the oldest `created_at`)."""
    now = utcnow()
    payouts: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    for i in range(count):
        payout_id = uuid.uuid4()
        at = now + timedelta(microseconds=i)
        payouts.append({
            "id": payout_id, "destination": external_address("regtest"),
            "amount_sats": PAYOUT_SATS, "state": S.APPROVED, "route": Route.AUTOMATIC,
            "created_by": creator, "approved_by": APPROVER, "approved_at": at,
            "metadata_": {}, "attempts": 0, "version": 2, "created_at": at, "updated_at": at,
        })  # fmt: skip
        events += [
            {"payout_id": payout_id, "from_state": None, "to_state": S.AWAITING_APPROVAL,
             "actor": creator, "reason": "created", "at": at},
            {"payout_id": payout_id, "from_state": S.AWAITING_APPROVAL, "to_state": S.APPROVED,
             "actor": APPROVER, "reason": f"approved for the {Route.AUTOMATIC.value} route",
             "at": at},
        ]  # fmt: skip
    return payouts, events


def publish(ids: list[uuid.UUID]) -> dict[uuid.UUID, float]:
    """The other half: what the approve route does after its commit, for each payout; returns
    when each call was made. Most of them publish nothing (coalesced wake-ups)."""
    sent = {}
    for payout_id in ids:
        sent[payout_id] = time.time()
        enqueue_process_payout(payout_id)
    return sent


def wait_idle(client: redis.Redis) -> None:
    """No batch run holds the wallet's lock: the previous burst's run is over, so nothing
    claims the next burst's approvals before its clock starts."""
    lock_key = BatchSignals(client, wallet_name(get_settings())).lock_key
    wait_until(lambda: not client.exists(lock_key), IDLE_TIMEOUT_SECONDS,
               "the batch run to release the wallet's lock", 0.02)  # fmt: skip


def _use(env: Mapping[str, str]) -> None:
    os.environ.update({k: v for k, v in env.items() if k.startswith("PAYOUTS_")})
    reset_process_caches()


def _drain(count: int, workers: int, client: redis.Redis, node: NodeClient,
           meter: CpuMeter) -> tuple[RunStats, Paid, float]:  # fmt: skip
    burst = Burst(count)
    started = time.monotonic()
    burst.prepare()
    prepared = time.monotonic() - started
    wait_idle(client)
    meter.start()
    sent = publish(burst.ids)
    burst.wait_paid(10 + count * SECONDS_PER_PAYOUT_LIMIT)
    cpu = meter.per_item(count)
    ends = burst.ends()
    stats = summarize([sent[i] for i in burst.ids], [ends[i] for i in burst.ids], workers)
    return replace(stats, cpu_ms=cpu), burst.paid(node), prepared


def _warm_up(workers: int, client: redis.Redis) -> None:
    """Small bursts made by the API's own calls until every worker process has run a batch: a
    process's first batch run creates its DB engine and connections (~0.3 s of CPU here),
    which must not land in a measured burst. One burst is not enough, since only the lock
    holder of a run touches the database; consecutive messages go to the idle workers in
    turn, so this takes about W rounds."""
    seen: set[str] = set()
    for _ in range(WARM_UP_ROUNDS):
        burst = Burst(2)
        burst.prepare(via_intake=True)
        wait_idle(client)
        publish(burst.ids)
        burst.wait_paid(10 + SECONDS_PER_PAYOUT_LIMIT, LIGHT_POLL_SECONDS)
        seen |= burst.claimers()
        if len(seen) >= workers:
            return
    print(f"bench: warning: after {WARM_UP_ROUNDS} warm-up rounds only {len(seen)} of "
          f"{workers} workers had run a batch; the first measured burst pays the others' "
          "start-up", file=sys.stderr, flush=True)  # fmt: skip


def _one_in_flight(count: int, client: redis.Redis) -> RunStats:
    starts, ends = [], []
    for _ in range(count):
        burst = Burst(1)
        burst.prepare(via_intake=True)
        wait_idle(client)
        sent = publish(burst.ids)
        burst.wait_paid(10 + SECONDS_PER_PAYOUT_LIMIT, LIGHT_POLL_SECONDS)
        starts.append(sent[burst.ids[0]])
        ends.append(burst.ends()[burst.ids[0]])
    return summarize(starts, ends, 1)


def run_pipeline(
    payouts: int, workers: int, batch_size: int, light_load: int, repeat: int,
    env: Mapping[str, str], workdir: Path,
) -> PipelineResult:
    """The bursts of one batch size on a node of its own: every configuration starts from the
    same wallet (the simulated node's coin selection scans the whole wallet history, so a
    shared node would make later runs slower for reasons that are not the pipeline's)."""
    repeat = repeats_for(payouts, batch_size, repeat)
    batches = repeat * batches_for(payouts, batch_size) + WARM_UP_ROUNDS + light_load
    funding = funding_for(batches, batch_size)
    client = redis.Redis.from_url(get_settings().redis_url, socket_timeout=10)
    with devnode_process(workdir) as node_process:
        node = RegtestNode(node_process.wallet_url)
        fund_wallet(node, funding.coins, funding.coin_sats)
        run_env = {
            **env,
            "PAYOUTS_BITCOIND_URL": node_process.wallet_url,
            "PAYOUTS_BATCH_MAX_PAYOUTS": str(batch_size),
        }
        # The bench publishes too: its wake-up flag must name the workers' wallet.
        _use(run_env)
        try:
            with running_workers(PIPELINE_APP, workers, run_env, workdir) as pool:
                _warm_up(workers, client)
                meter = CpuMeter({
                    "workers": lambda: with_children(pool.pids),
                    "node": lambda: [node_process.pid],
                    "postgres": database_backends,
                })
                runs = [_drain(payouts, workers, client, node, meter) for _ in range(repeat)]
                light = _one_in_flight(light_load, client) if light_load else None
                peak = pool.peak_rss()
                by_role = pool.peak_rss_by_role()
        finally:
            client.close()
    drained = median_run([stats for stats, _paid, _prep in runs])
    paid = next(p for stats, p, _prep in runs if stats.per_second == drained.per_second)
    return PipelineResult(
        batch_size=batch_size,
        drained=drained,
        paid=paid,
        light=light,
        worker_rss_mb=peak.mb if peak else float("nan"),
        worker_rss_role=f"{peak.role} pid {peak.pid}" if peak else "unknown",
        worker_rss_by_role=by_role,
        prepare_seconds=sum(prep for _stats, _paid, prep in runs),
    )
