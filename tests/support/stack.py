"""A running payout system for integration tests: simulated (or real) node, PostgreSQL,
Redis, the API over HTTP, real Celery worker processes and beat.

The node is chosen by PAYOUTS_TEST_BITCOIND_URL: unset → an in-process simulated regtest node;
set (docker-compose) → that real bitcoind regtest wallet URL. Same tests either way.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis

from cli.addresses import external_address
from cli.embedded import free_port
from cli.funding import fund_wallet
from cli.processes import (
    ManagedProcess,
    api_argv,
    beat_argv,
    wait_for_http,
    wait_for_worker_ready,
    wait_until,
    worker_argv,
)
from cli.regtest_node import RegtestNode

FUNDING_COINS = 60
COIN_SATS = 20_000_000


@contextmanager
def node_for_tests() -> Iterator[tuple[str, Any]]:
    """(wallet URL, devnode handle or None)."""
    real = os.environ.get("PAYOUTS_TEST_BITCOIND_URL")
    if real:
        yield real, None
        return
    from devnode.server import start_devnode

    with start_devnode(host="127.0.0.1", port=0) as devnode:
        yield devnode.wallet_url, devnode


@dataclass
class Stack:
    env: dict[str, str]
    node: RegtestNode
    devnode: Any
    api_url: str
    workdir: Path
    keys: dict[str, str]
    workers: list[ManagedProcess] = field(default_factory=list)
    beat: ManagedProcess | None = None
    api: ManagedProcess | None = None
    _stack: ExitStack = field(default_factory=ExitStack)
    _client: httpx.Client | None = None

    def headers(self, who: str, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[who]}", **extra}

    def http(self) -> httpx.Client:
        """A new client, for callers that want their own (`with stack.http() as client`)."""
        return httpx.Client(base_url=self.api_url, timeout=30)

    @property
    def client(self) -> httpx.Client:
        """One shared, thread-safe client for the helpers below: polling with a new client
        per request spent more time in connection setup than in the API."""
        if self._client is None:
            self._client = httpx.Client(
                base_url=self.api_url, timeout=30, limits=httpx.Limits(max_connections=32)
            )
        return self._client

    def start_worker(self, name: str | None = None) -> ManagedProcess:
        name = name or f"w{len(self.workers) + 1}-{uuid.uuid4().hex[:4]}"
        proc = ManagedProcess(name, worker_argv(f"{name}@%h"), self.env, self.workdir)
        self.workers.append(proc)
        wait_for_worker_ready(proc)
        return proc

    def start_beat(self) -> ManagedProcess:
        self.beat = ManagedProcess(
            "beat", beat_argv(self.workdir / "beat-schedule"), self.env, self.workdir
        )
        return self.beat

    def create_and_approve(self, amount_sats: int, *, approve: bool = True) -> dict[str, Any]:
        destination = external_address("regtest")
        client = self.client
        made = client.post(
            "/v1/payouts",
            json={"destination": destination, "amount_sats": amount_sats},
            headers=self.headers("backend", **{"Idempotency-Key": uuid.uuid4().hex}),
        )
        assert made.status_code == 201, made.text
        payout: dict[str, Any] = made.json()
        if approve:
            approved = client.post(
                f"/v1/payouts/{payout['id']}/approve", headers=self.headers("approver")
            )
            assert approved.status_code == 200, approved.text
            payout = approved.json()
        return payout

    def payout(self, payout_id: str) -> dict[str, Any]:
        reply = self.client.get(f"/v1/payouts/{payout_id}", headers=self.headers("backend"))
        assert reply.status_code == 200, reply.text
        result: dict[str, Any] = reply.json()
        return result

    def wait_for_states(self, ids: list[str], states: set[str], timeout: float) -> None:
        pending = set(ids)

        def done() -> bool:
            for payout_id in list(pending):
                if self.payout(payout_id)["state"] in states:
                    pending.discard(payout_id)
            return not pending

        try:
            wait_until(done, timeout, f"{len(pending)} payouts to reach {sorted(states)}", 0.2)
        except TimeoutError as exc:
            sample = [self.payout(p) for p in list(pending)[:3]]
            logs = "\n".join(f"--- {w.name}\n{w.log_tail(15)}" for w in self.workers)
            raise AssertionError(f"{exc}; e.g. {sample}\n{logs}") from exc

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        for proc in [*self.workers, self.beat, self.api]:
            if proc is not None:
                proc.stop()
        self._stack.close()


def build_stack(*, postgres_url: str, redis_url: str, workdir: Path, **settings: str) -> Stack:
    stack = ExitStack()
    try:
        wallet_url, devnode = stack.enter_context(node_for_tests())
        node = RegtestNode(wallet_url)
        fund_wallet(node, FUNDING_COINS, COIN_SATS)
        redis.Redis.from_url(redis_url).flushdb()
        env = {k: v for k, v in os.environ.items() if not k.startswith("PAYOUTS_")}
        env.update(
            PAYOUTS_DATABASE_URL=postgres_url,
            PAYOUTS_REDIS_URL=redis_url,
            PAYOUTS_BITCOIND_URL=wallet_url,
            PAYOUTS_NETWORK="regtest",
            PAYOUTS_MIN_CONFIRMATIONS="1",
            PAYOUTS_MAINTENANCE_INTERVAL_SECONDS="1",
            PAYOUTS_SWEEP_AFTER_SECONDS="3",
            PAYOUTS_LEASE_SECONDS="10",
            PAYOUTS_BATCH_WINDOW_SECONDS="0.2",
        )
        env.update({f"PAYOUTS_{k.upper()}": v for k, v in settings.items()})
        os.environ.update({k: v for k, v in env.items() if k.startswith("PAYOUTS_")})
        keys = _mint_keys()
        port = free_port()
        api = ManagedProcess("api", api_argv(port), env, workdir)
        result = Stack(
            env=env, node=node, devnode=devnode, api_url=f"http://127.0.0.1:{port}",
            workdir=workdir, keys=keys, api=api, _stack=stack,
        )  # fmt: skip
        wait_for_http(api, f"{result.api_url}/healthz")
        return result
    except BaseException:
        stack.close()
        raise


def _mint_keys() -> dict[str, str]:
    from cli.caches import reset_process_caches
    from shared.infra.db import session_scope
    from shared.intake.api_keys import create_api_key

    reset_process_caches()
    wanted = {
        "backend": "payouts:create,payouts:read",
        "approver": "payouts:approve,payouts:read",
        "signer": "payouts:sign,payouts:read",
        "signer2": "payouts:sign,payouts:read",
    }
    with session_scope() as session:
        return {
            name: create_api_key(session, f"{name}-{uuid.uuid4().hex[:6]}", scopes)
            for name, scopes in wanted.items()
        }
