"""A running payout system for one chaos scenario, and what every scenario does around its
faults: start it, kill and restart workers, let recovery run, judge from the ledger.

Scale: `PAYOUTS_CHAOS_FULL=1` (what `make chaos` sets) runs the issue's full size; without it
(`make test`, CI) every scenario runs the same faults on fewer payouts.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import redis
from sqlalchemy import Engine, create_engine, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from cli.addresses import external_address
from cli.funding import fund_wallet
from cli.processes import ManagedProcess, wait_for_worker_ready, wait_until, worker_argv
from cli.regtest_node import RegtestNode
from shared.core.models import Payout, PayoutEvent, Transaction
from shared.node.amounts import sats_to_btc
from tests.chaos.oracle import DbRow, PayoutRef, Summary, batching_problems, judge_run, record
from tests.chaos.traffic import Miner, Producer
from tests.support.stack import Stack, build_stack

FULL = os.environ.get("PAYOUTS_CHAOS_FULL", "") == "1"
# Per scenario. The short size keeps the whole chaos tier within its share of CI's budget.
PAYOUTS = int(os.environ.get("PAYOUTS_CHAOS_PAYOUTS", "300" if FULL else "36"))
WORKERS = 3
# The automatic route is the batcher: one transaction pays up to this many payouts. Small
# enough that every scenario makes many batches (36 payouts short, 300 full), and full ones.
BATCH_MAX_PAYOUTS = int(os.environ.get("PAYOUTS_CHAOS_BATCH_MAX_PAYOUTS", "25" if FULL else "8"))

# Short recovery timings so a scenario recovers in seconds; the mechanisms are the same as
# with the production defaults, only the clocks run faster.
CHAOS_SETTINGS = {
    "lease_seconds": "5",
    "sweep_after_seconds": "2",
    "maintenance_interval_seconds": "1",
    "min_confirmations": "1",
    # Short enough that a latency spike becomes a client timeout ("it happened, you did not
    # hear"), the case the node-fault scenario is about.
    "node_timeout_seconds": "3",
    # Above this a payout takes the manual route (the manual-claimer scenario adds some).
    "auto_max_sats": "1000000",
    "batch_max_payouts": str(BATCH_MAX_PAYOUTS),
    # A batch run waits this long after the oldest approval for company: at the producers'
    # pace (4-8 approvals a second) batches gather several payouts, and fill up after a fault.
    "batch_window_seconds": "1",
}
SETTLED = frozenset({"confirmed", "failed"})
# The beat jobs' run-locks (workers/tasks.py `_exclusive`).
MAINTENANCE_LOCKS = tuple(
    f"maintenance:{job}"
    for job in (
        "sweep", "rebroadcast", "track_confirmations", "release_orphaned_locks", "bump_fees"
    )  # fmt: skip
)
# Blocks after which a coinbase is spendable by its wallet (with its own block: depth 101).
COINBASE_MATURITY = 100
# How long recovery may take after the last fault before a payout counts as unpaid.
RECOVERY_SECONDS = 240 if FULL else 120


def amounts(count: int, base: int = 10_000) -> list[int]:
    """Distinct small amounts, so every payout is its own line on the ledger."""
    return [base + 7 * i for i in range(count)]


@dataclass
class ChaosStack:
    stack: Stack
    postgres_url: str
    summary_file: Path
    rng: random.Random
    miner: Miner
    faults: int = 0
    kills: list[str] = field(default_factory=list)
    recovery_seconds: float = 0.0
    _producers: list[Producer] = field(default_factory=list)
    _engine: Engine | None = None

    @property
    def node(self) -> RegtestNode:
        return self.stack.node

    def produce(
        self, amounts: list[int], duration: float, threads: int = Producer.THREADS
    ) -> Producer:
        """Start creating and approving payouts in the background (see `Producer`)."""
        producer = Producer(self.stack, amounts, duration, threads)
        self._producers.append(producer)
        return producer

    # ------------------------------------------------------------------ workers

    def start_workers(self, count: int) -> None:
        """Start them all, then wait: Celery start-up is slow, sequential starts add up."""
        started = []
        for _ in range(count):
            name = f"w{len(self.stack.workers) + 1}-{uuid.uuid4().hex[:4]}"
            proc = ManagedProcess(name, worker_argv(f"{name}@%h"), self.stack.env,
                                  self.stack.workdir)  # fmt: skip
            self.stack.workers.append(proc)
            started.append(proc)
        for proc in started:
            wait_for_worker_ready(proc)

    def kill_random_worker(self) -> str:
        """SIGKILL a random worker: either the whole worker (Celery's main process and its
        pool child; its unacked message waits for the broker's visibility timeout) or only
        the pool child running the task (the main process sees the loss and requeues).
        The killed worker is restarted at once. Returns what was killed."""
        alive = [w for w in self.stack.workers if w.alive()]
        assert alive, "every worker is dead; restarts are not keeping up"
        worker = self.rng.choice(alive)
        children = _children(worker.pid)
        if children and self.rng.random() < 0.5:
            os.kill(self.rng.choice(children), signal.SIGKILL)
            what = f"{worker.name}:pool-child"
        else:
            worker.kill9()
            worker.start()
            what = f"{worker.name}:whole"
        self.kills.append(what)
        self.faults += 1
        return what

    def kill_all_workers_mid_maintenance(self, timeout: float = 10) -> str:
        """SIGKILL every worker at once (a host crash, an OOM storm) at a moment when one of
        them is inside a beat job, so the job's Redis run-lock is orphaned with it."""
        client = redis.Redis.from_url(self.stack.env["PAYOUTS_REDIS_URL"])
        try:
            wait_until(lambda: bool(client.exists(*MAINTENANCE_LOCKS)), timeout,
                       "a maintenance job to be running", interval=0.005)  # fmt: skip
        except TimeoutError:
            pass  # then it is simply a crash of every worker at a random moment
        finally:
            client.close()
        for worker in self.stack.workers:
            worker.kill9()
        for worker in self.stack.workers:
            worker.start()
        self.kills.extend(f"{w.name}:whole(all)" for w in self.stack.workers)
        self.faults += len(self.stack.workers)
        return "all workers"

    def ensure_workers_running(self) -> None:
        for worker in self.stack.workers:
            if not worker.alive():
                worker.start()

    # ------------------------------------------------------------------ database

    def engine(self) -> Engine:
        if self._engine is None:
            # Our own engine: the chaos may kill its connections too; pre-ping replaces them.
            self._engine = create_engine(self.postgres_url, pool_pre_ping=True, pool_size=2)
        return self._engine

    def signatures(self, payout_id: str) -> int:
        """How many times the audit trail says this payout was signed (never re-signed: 1)."""
        with self.engine().connect() as conn:
            return int(
                conn.execute(
                    select(func.count())
                    .select_from(PayoutEvent)
                    .where(PayoutEvent.payout_id == uuid.UUID(payout_id))
                    .where(PayoutEvent.to_state == "signed")
                ).scalar_one()
            )

    def db_rows(self, ids: list[str]) -> dict[str, DbRow]:
        wanted = [uuid.UUID(i) for i in ids]
        with self.engine().connect() as conn:
            rows = conn.execute(
                select(Payout.id, Payout.state, Payout.last_error, Transaction.raw_hex)
                .outerjoin(Transaction, Transaction.id == Payout.tx_id)
                .where(Payout.id.in_(wanted))
            ).all()
        return {str(r.id): DbRow(r.state, r.last_error, r.raw_hex) for r in rows}

    def terminate_db_connections(self) -> int:
        """pg_terminate_backend every other connection to the test database (the API's, the
        workers', beat's, ours), as a failover or an admin's kill would. Returns how many."""
        killer = create_engine(self.postgres_url, poolclass=NullPool)
        try:
            with killer.connect() as conn:
                killed = conn.execute(
                    text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE datname = :db AND pid <> pg_backend_pid()"
                    ),
                    {"db": make_url(self.postgres_url).database},
                ).scalar_one()
        finally:
            killer.dispose()
        self.faults += 1
        return int(killed)

    def txids(self, ids: list[str]) -> dict[str, str]:
        """Payout id -> txid of its stored transaction (payouts without one are left out)."""
        wanted = [uuid.UUID(i) for i in ids]
        with self.engine().connect() as conn:
            rows = conn.execute(
                select(Payout.id, Transaction.txid)
                .join(Transaction, Transaction.id == Payout.tx_id)
                .where(Payout.id.in_(wanted))
            ).all()
        return {str(r.id): r.txid for r in rows}

    def batch_sizes(self, ids: list[str]) -> dict[str, int]:
        """Txid -> how many of these payouts it pays (each payout's current transaction)."""
        wanted = [uuid.UUID(i) for i in ids]
        with self.engine().connect() as conn:
            rows = conn.execute(
                select(Transaction.txid, func.count())
                .join(Payout, Payout.tx_id == Transaction.id)
                .where(Payout.id.in_(wanted))
                .group_by(Transaction.txid)
            ).all()
        return {txid: int(count) for txid, count in rows}

    def events(
        self, ids: list[str], to_state: str | None = None, from_state: str | None = None
    ) -> dict[str, list[str]]:
        """Payout id -> the reasons of its audit rows (only the transitions from `from_state`
        and into `to_state`, where given), oldest first."""
        query = select(PayoutEvent.payout_id, PayoutEvent.reason).where(
            PayoutEvent.payout_id.in_([uuid.UUID(i) for i in ids])
        )
        if to_state is not None:
            query = query.where(PayoutEvent.to_state == to_state)
        if from_state is not None:
            query = query.where(PayoutEvent.from_state == from_state)
        found: dict[str, list[str]] = {i: [] for i in ids}
        with self.engine().connect() as conn:
            for payout_id, reason in conn.execute(query.order_by(PayoutEvent.id)).all():
                found[str(payout_id)].append(reason or "")
        return found

    def unsettled(self, ids: list[str]) -> list[str]:
        rows = self.db_rows(ids)
        return [i for i in ids if i not in rows or rows[i].state not in SETTLED]

    # ------------------------------------------------------------------ recovery and verdict

    def recover_and_judge(
        self,
        scenario: str,
        payouts: list[PayoutRef],
        foreign_txids: frozenset[str] = frozenset(),
        deadline: float = RECOVERY_SECONDS,
    ) -> Summary:
        """Let recovery run (workers up, blocks mined, beat sweeping) until every payout is
        confirmed or failed, or `deadline` seconds pass; then judge from the ledger and record
        the summary line. Never raises on a timeout: what is left counts as unpaid."""
        self.node.call("devnode_clear_faults")
        self.ensure_workers_running()
        self.miner.resume()
        ids = [p.id for p in payouts]
        started = time.monotonic()
        # On timeout nothing is raised here: what is not settled is judged (and fails) below.
        with contextlib.suppress(TimeoutError):
            wait_until(lambda: not self.unsettled(ids), deadline,
                       "every payout to be confirmed or failed", interval=0.5)  # fmt: skip
        self.recovery_seconds = time.monotonic() - started
        self.miner.pause()
        summary = judge_run(
            scenario, self.node, payouts, self.db_rows(ids), self.faults, foreign_txids
        )
        automatic = [p.id for p in payouts if p.route == "automatic"]
        sizes = self.batch_sizes(automatic)
        cap = int(self.stack.env["PAYOUTS_BATCH_MAX_PAYOUTS"])
        summary.batching = batching_problems(sizes, len(automatic), cap)
        notes = [
            f"recovery took {self.recovery_seconds:.1f}s",
            f"{len(automatic)} automatic payouts paid by {len(sizes)} transactions (largest "
            f"{max(sizes.values(), default=0)}, PAYOUTS_BATCH_MAX_PAYOUTS={cap})",
            *summary.failure_reasons(),
        ]
        record(summary, self.summary_file, "\n  ".join(notes))
        return summary

    def worker_logs(self, lines: int = 8) -> str:
        return "\n".join(f"--- {w.name}\n{w.log_tail(lines)}" for w in self.stack.workers)

    def close(self) -> None:
        for producer in self._producers:
            producer.stop()
        self.miner.stop()
        if self._engine is not None:
            self._engine.dispose()
        self.stack.close()


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


@contextmanager
def chaos_stack(
    *,
    postgres_url: str,
    redis_url: str,
    workdir: Path,
    summary_file: Path,
    seed: int,
    coins: int = 0,
    few_coins: int = 0,
    only_coins: int = 0,
    workers: int = WORKERS,
    mine_every: float = 2.0,
    **settings: str,
) -> Iterator[ChaosStack]:
    """The whole system with short recovery timings. `coins` extra confirmed coins give every
    payout its own input (no chains of unconfirmed change) where a scenario needs that;
    `few_coins` does the opposite (see `consolidate`), and `only_coins` does it strictly: the
    hot wallet holds exactly that many coins and never gets another (see `sweep_into`)."""
    saved_env = dict(os.environ)  # build_stack exports the stack's PAYOUTS_* settings
    try:
        stack = build_stack(
            postgres_url=postgres_url, redis_url=redis_url, workdir=workdir,
            **{**CHAOS_SETTINGS, **settings},
        )  # fmt: skip
        # With `only_coins` no block pays the hot wallet: a coinbase maturing every block would
        # be a new coin every block.
        burn = external_address("regtest") if only_coins else None
        chaos = ChaosStack(stack, postgres_url, summary_file, random.Random(seed),
                           Miner(stack.node, mine_every, burn))  # fmt: skip
        try:
            if coins:
                fund_wallet(stack.node, coins=coins, coin_sats=2_000_000)
            if few_coins:
                consolidate(stack.node, few_coins)
            if only_coins and burn:
                sweep_into(stack.node, only_coins, burn)
            chaos.start_workers(workers)
            stack.start_beat()
            yield chaos
        finally:
            chaos.close()
    finally:
        os.environ.clear()
        os.environ.update(saved_env)


def consolidate(node: RegtestNode, coins: int) -> None:
    """Sweep the hot wallet into a few coins, so payouts spend each other's unconfirmed change
    in chains between blocks, as a busy hot wallet with few UTXOs does."""
    margin = 1_000_000  # fees of a many-input sweep, with room to spare
    share = (node.get_balance_sats() - margin) // coins
    node.send_many({node.get_new_address(): share for _ in range(coins)})
    node.call("devnode_mine", 1)


def sweep_into(node: RegtestNode, coins: int, burn: str) -> None:
    """Leave the hot wallet exactly `coins` confirmed coins: first every coinbase it mined is
    matured (blocks to `burn`, an address no wallet owns), then everything is swept into
    `coins` equal outputs with the fee taken from them (no change output)."""
    node.call("devnode_mine", COINBASE_MATURITY, burn)
    addresses = [node.get_new_address() for _ in range(coins)]
    share = node.get_balance_sats() // coins
    node.call("sendmany", "", {a: sats_to_btc(share) for a in addresses}, None, "", addresses)
    node.call("devnode_mine", 1, burn)
    held = node.list_unspent()
    assert len(held) == coins, f"the sweep left {len(held)} coins, not {coins}: {held}"


def settle_quietly(chaos: ChaosStack, ids: list[str], states: set[str], timeout: float) -> bool:
    """Wait for payouts to reach `states` (used to time a fault); False on timeout."""

    def reached() -> bool:
        rows = chaos.db_rows(ids)
        return all(i in rows and rows[i].state in states for i in ids)

    try:
        wait_until(reached, timeout, f"payouts to reach {sorted(states)}", interval=0.3)
        return True
    except TimeoutError:
        return False


def pause(rng: random.Random, low: float, high: float) -> None:
    """A random gap before the next fault (timing faults, never an assertion)."""
    time.sleep(rng.uniform(low, high))
