"""The shared services one bench run uses: its own PostgreSQL database (created, migrated,
dropped), its own Redis database number, and a simulated regtest node in its own process
(so the node's CPU is not the bench's, and the bench's polling does not slow the node)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis
from sqlalchemy import text

from cli.embedded import free_port
from cli.processes import ManagedProcess, wait_until
from cli.regtest_node import RegtestNode
from shared.node.errors import NodeError
from tests.support.databases import scratch_database

DEFAULT_POSTGRES_ADMIN_URL = os.environ.get(
    "PAYOUTS_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
# Database 10 is the benchmark's own: the bench empties it, so it must not be anyone else's.
DEFAULT_REDIS_URL = os.environ.get("PAYOUTS_BENCH_REDIS_URL", "redis://127.0.0.1:6379/10")
NODE_START_SECONDS = 30


def fresh_postgres_database(admin_url: str) -> AbstractContextManager[str]:
    """Create an empty database, migrate it with Alembic, yield its URL, drop it after."""
    return scratch_database(admin_url, "payouts_bench")


@contextmanager
def empty_redis(url: str) -> Iterator[str]:
    """Our Redis database, emptied before and after (queues, locks, timing lists)."""
    client = redis.Redis.from_url(url, socket_connect_timeout=3)
    client.flushdb()
    try:
        yield url
    finally:
        client.flushdb()
        client.close()


@dataclass(frozen=True)
class NodeProcess:
    wallet_url: str
    pid: int


@contextmanager
def devnode_process(workdir: Path) -> Iterator[NodeProcess]:
    """`payouts devnode` on a free loopback port."""
    port = free_port()
    argv = [sys.executable, "-m", "cli.main", "devnode", "--host", "127.0.0.1",
            "--port", str(port), "--log-level", "WARNING"]  # fmt: skip
    proc = ManagedProcess("devnode", argv, os.environ, workdir)
    url = f"http://payouts:payouts@127.0.0.1:{port}/wallet/hot"
    node = RegtestNode(url, timeout=5, read_retries=0)

    def answering() -> bool:
        if not proc.alive():
            raise RuntimeError(f"devnode exited:\n{proc.log_tail()}")
        try:
            node.get_block_count()
            return True
        except NodeError:
            return False

    try:
        wait_until(answering, NODE_START_SECONDS, "the simulated node to answer")
        yield NodeProcess(url, proc.pid)
    finally:
        proc.stop()


def database_backends() -> list[int]:
    """PostgreSQL server processes serving our database (the app's settings' database)."""
    from shared.infra.db import session_scope

    with session_scope() as session:
        rows = session.execute(
            text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
        ).scalars()
        return [int(pid) for pid in rows]


