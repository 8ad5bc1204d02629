"""The real API as a subprocess (`payouts api`) on the session's migrated PostgreSQL, with
Redis as the Celery broker; tests drive it over HTTP on 127.0.0.1.

The servers live for the whole session (start-up costs a second or two); each test gets an
emptied database (`pg_db`) and an emptied broker queue, so tests stay independent.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import create_engine, text

from cli.embedded import free_port
from cli.processes import ManagedProcess, wait_for_http
from shared.infra.celery_config import PAYOUTS_QUEUE
from shared.infra.db import session_scope
from shared.intake.api_keys import create_api_key

SERVER_SETTINGS = {
    "PAYOUTS_NETWORK": "regtest",
    "PAYOUTS_AUTOMATIC_PROCESSING": "true",
    "PAYOUTS_MAX_PAYOUT_SATS": "50000000",
    "PAYOUTS_AUTO_MAX_SATS": "1000000",
    "PAYOUTS_AUTO_DAILY_SATS": "3000000",
    "PAYOUTS_FOUR_EYES": "false",
    "PAYOUTS_MAX_BODY_BYTES": "4096",
    "PAYOUTS_LOG_JSON": "false",
}
BODY_LIMIT = 4096

KEY_SCOPES = {
    "admin": "admin",
    "creator": "payouts:create,payouts:read",
    "approver": "payouts:approve,payouts:read",
    "approver2": "payouts:approve,payouts:read",
    "reader": "payouts:read",
    "signer": "payouts:sign",
}


def payouts_api_argv(port: int) -> list[str]:
    """The installed `payouts` entry point, exactly as an operator runs it."""
    script = Path(sys.executable).with_name("payouts")
    exe = [str(script)] if script.exists() else [shutil.which("payouts") or "payouts"]
    return [*exe, "api", "--host", "127.0.0.1", "--port", str(port)]


@dataclass
class ApiServer:
    url: str
    process: ManagedProcess

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)

    def log(self) -> str:
        return self.process.log_path.read_text(errors="replace")


def start_api(env: dict[str, str], workdir: Path, name: str) -> ApiServer:
    port = free_port()
    process = ManagedProcess(name, payouts_api_argv(port), env, workdir)
    server = ApiServer(f"http://127.0.0.1:{port}", process)
    try:
        wait_for_http(process, f"{server.url}/healthz", timeout=30)
    except BaseException:
        process.stop()
        raise
    return server


@pytest.fixture(scope="session")
def server_env(postgres_url: str, redis_url: str) -> dict[str, str]:
    # Only the settings we choose: a developer's own PAYOUTS_* must not leak into the servers.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYOUTS_")}
    env.update(SERVER_SETTINGS)
    env.update(
        PAYOUTS_DATABASE_URL=postgres_url,
        PAYOUTS_REDIS_URL=redis_url,
        PAYOUTS_BROKER_URL=redis_url,
    )
    return env


@pytest.fixture(scope="session")
def api_server(
    server_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiServer]:
    server = start_api(server_env, tmp_path_factory.mktemp("api"), "api")
    yield server
    server.process.stop()


@pytest.fixture(scope="session")
def four_eyes_server(
    server_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiServer]:
    env = {**server_env, "PAYOUTS_FOUR_EYES": "true"}
    server = start_api(env, tmp_path_factory.mktemp("api-four-eyes"), "api-four-eyes")
    yield server
    server.process.stop()


@pytest.fixture(scope="session")
def broker_down_server(
    server_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiServer]:
    """An API whose broker URL points at a port nothing listens on."""
    dead_broker = f"redis://127.0.0.1:{free_port()}/0"
    env = {**server_env, "PAYOUTS_BROKER_URL": dead_broker}
    server = start_api(env, tmp_path_factory.mktemp("api-no-broker"), "api-no-broker")
    yield server
    server.process.stop()


@pytest.fixture
def client(api_server: ApiServer) -> Iterator[httpx.Client]:
    with api_server.client() as http:
        yield http


@pytest.fixture
def keys(pg_db: str) -> dict[str, str]:
    """name -> secret, minted straight into the (emptied) PostgreSQL database."""
    with session_scope() as session:
        return {name: create_api_key(session, name, scopes) for name, scopes in KEY_SCOPES.items()}


@pytest.fixture
def broker(redis_url: str) -> Iterator[redis.Redis]:
    """The broker's Redis database with the payouts queue emptied (no worker consumes it here),
    and no batch wake-up outstanding: the first automatic approval publishes, and the ones
    after it publish nothing until a batch run claims (shared/sending/batch_signals.py)."""
    client = redis.Redis.from_url(redis_url)
    wake_flags = list(client.scan_iter("batch:*:wake"))  # whatever wallet the API names
    client.delete(PAYOUTS_QUEUE, *wake_flags)
    yield client
    client.delete(PAYOUTS_QUEUE, *client.scan_iter("batch:*:wake"))
    client.close()


def queued_messages(broker: redis.Redis) -> list[dict[str, Any]]:
    """Celery messages waiting in the payouts queue (kombu's Redis transport: a list of JSON)."""
    return [json.loads(raw) for raw in broker.lrange(PAYOUTS_QUEUE, 0, -1)]


TABLES = ("payouts", "payout_events", "idempotency_keys")


def db_snapshot(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the payout tables, for "a refused request changed nothing" checks."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return {
                table: [
                    tuple(row) for row in conn.execute(text(f"SELECT * FROM {table} ORDER BY 1"))
                ]
                for table in TABLES
            }
    finally:
        engine.dispose()


def bearer(secret: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}", **extra}
