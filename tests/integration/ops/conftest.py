"""One running system for every ops test (starting workers is too slow per module).

Reached through cuttable proxies (PostgreSQL, Redis), so the reconnect tests can take a
service away without touching the machine's shared servers. Two worker processes (one started
as `celery … worker`, one as `payouts worker`, which runs the start-up gate), `payouts beat`,
and `payouts flower` with basic auth. The RPC password, the Flower password and the API keys are
distinctive, so the log test can grep every process log for them.
"""

from __future__ import annotations

import os
import secrets
import sys
import urllib.parse
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass

import httpx
import pytest
from sqlalchemy.engine import make_url

from cli.embedded import free_port
from cli.processes import (
    ManagedProcess,
    wait_for_http,
    wait_for_worker_ready,
    wait_until,
    worker_argv,
)
from shared.sending.dispatch import reset_publisher
from tests.integration.ops.proxy import CuttableProxy
from tests.support.services import truncate_all
from tests.support.stack import Stack, build_stack

# Above this a payout takes the manual route (what the oldest-unpaid metric watches by route).
AUTO_MAX_SATS = 1_000_000
FLOWER_USER = "ops-watch"


@dataclass
class OpsSystem:
    stack: Stack
    flower_url: str
    flower_auth: tuple[str, str]
    flower: ManagedProcess
    pg_proxy: CuttableProxy
    redis_proxy: CuttableProxy
    rpc_password: str

    def flower_get(self, path: str, **params: str) -> httpx.Response:
        return httpx.get(
            f"{self.flower_url}{path}", params=params, auth=self.flower_auth, timeout=10
        )

    def processes(self) -> list[ManagedProcess]:
        stack = self.stack
        return [p for p in [*stack.workers, stack.beat, stack.api, self.flower] if p is not None]

    def env(self, **overrides: str) -> dict[str, str]:
        """The system's process environment with some PAYOUTS_* settings changed."""
        return {**self.stack.env, **{f"PAYOUTS_{k.upper()}": v for k, v in overrides.items()}}


def payouts_argv(*args: str) -> list[str]:
    """`payouts <args>` exactly as the entry point runs it."""
    return [sys.executable, "-m", "cli.main", *args]


def _proxy_for(url: str, default_port: int) -> CuttableProxy:
    parts = urllib.parse.urlsplit(url.replace("postgresql+psycopg", "postgresql"))
    return CuttableProxy(parts.hostname or "127.0.0.1", parts.port or default_port)


@pytest.fixture(scope="package")
def ops(
    postgres_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OpsSystem]:
    saved_env = dict(os.environ)
    truncate_all(postgres_url)
    with ExitStack() as cleanup:
        cleanup.callback(_restore_environ, saved_env)
        # This process's cached Celery publisher must follow our (proxied) broker, and must not
        # outlive it: later test modules would publish into a closed proxy port.
        reset_publisher()
        cleanup.callback(reset_publisher)
        pg_proxy = _proxy_for(postgres_url, 5432)
        cleanup.callback(pg_proxy.close)
        redis_proxy = _proxy_for(redis_url, 6379)
        cleanup.callback(redis_proxy.close)
        rpc_password = _own_devnode_unless_real_node(cleanup)
        workdir = tmp_path_factory.mktemp("ops")
        flower_password = f"flower-{secrets.token_hex(8)}"
        stack = build_stack(
            postgres_url=make_url(postgres_url)
            .set(host="127.0.0.1", port=pg_proxy.port)
            .render_as_string(hide_password=False),
            redis_url=urllib.parse.urlsplit(redis_url)
            ._replace(netloc=f"127.0.0.1:{redis_proxy.port}")
            .geturl(),
            workdir=workdir,
            auto_max_sats=str(AUTO_MAX_SATS),
            flower_user=FLOWER_USER,
            flower_password=flower_password,
        )
        cleanup.callback(stack.close)
        # Started together (each takes seconds to boot): a plain Celery worker, and one through
        # `payouts worker`, which must pass the start-up gate first.
        stack.workers += [
            ManagedProcess("celery-worker", worker_argv("plain@%h"), stack.env, workdir),
            ManagedProcess("payouts-worker", payouts_argv("worker", "--hostname", "gated@%h"),
                           stack.env, workdir),
        ]  # fmt: skip
        for worker in stack.workers:
            wait_for_worker_ready(worker)
        stack.beat = ManagedProcess("payouts-beat", payouts_argv("beat"), stack.env, workdir)
        flower_port = free_port()
        flower = ManagedProcess("flower", payouts_argv("flower", "--port", str(flower_port)),
                                stack.env, workdir)  # fmt: skip
        cleanup.callback(flower.stop)
        system = OpsSystem(
            stack, f"http://127.0.0.1:{flower_port}", (FLOWER_USER, flower_password), flower,
            pg_proxy, redis_proxy, rpc_password,
        )  # fmt: skip
        wait_for_http(flower, f"{system.flower_url}/healthcheck")
        _wait_until_flower_sees_workers(system, len(stack.workers))
        yield system


def _restore_environ(saved: dict[str, str]) -> None:
    os.environ.clear()
    os.environ.update(saved)


def _own_devnode_unless_real_node(cleanup: ExitStack) -> str:
    """The RPC password in use. A simulated node with a distinctive password, handed to
    build_stack through PAYOUTS_TEST_BITCOIND_URL; a real bitcoind (docker compose) as is."""
    real = os.environ.get("PAYOUTS_TEST_BITCOIND_URL")
    if real:
        return urllib.parse.unquote(urllib.parse.urlsplit(real).password or "")
    from devnode.server import start_devnode

    password = f"rpc-{secrets.token_hex(8)}"
    devnode = cleanup.enter_context(start_devnode("127.0.0.1", 0, rpcpassword=password))
    os.environ["PAYOUTS_TEST_BITCOIND_URL"] = devnode.wallet_url
    return password


def _wait_until_flower_sees_workers(system: OpsSystem, count: int) -> None:
    def seen() -> bool:
        if not system.flower.alive():
            raise RuntimeError(f"flower exited:\n{system.flower.log_tail()}")
        reply = system.flower_get("/api/workers", refresh="1")
        return reply.status_code == 200 and len(reply.json()) >= count

    wait_until(seen, 30, "Flower to list the workers", interval=0.5)
