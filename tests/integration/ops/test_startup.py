"""Readiness over HTTP, and `payouts api | worker | beat` refusing to start: a node on
another chain than PAYOUTS_NETWORK (exit 5, API and worker: beat never asks the node), or a
service they need unreachable (exit 4), each with one line naming the setting to fix and no
secret in it."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import subprocess
import warnings
from dataclasses import dataclass

import httpx
import pytest

from cli.embedded import free_port
from shared.ops.health import EXIT_SERVICE_UNREACHABLE, EXIT_WRONG_NETWORK
from tests.integration.ops.conftest import OpsSystem, payouts_argv

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # Starlette's nudge towards httpx2, as in tests/unit/api
    from fastapi.testclient import TestClient

from api.app import create_app

# Generous: a process that wrongly starts is caught by this and reported as a failure.
REFUSAL_TIMEOUT_SECONDS = 45


@dataclass(frozen=True)
class Case:
    verb: str
    settings: tuple[tuple[str, str], ...]
    exit_code: int
    names: str


def _cases() -> dict[str, Case]:
    dead_pg = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/payouts"
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    wrong = EXIT_WRONG_NETWORK
    gone = EXIT_SERVICE_UNREACHABLE
    return {
        "api-mainnet": Case("api", (("network", "mainnet"),), wrong, "PAYOUTS_NETWORK"),
        "worker-signet": Case("worker", (("network", "signet"),), wrong, "PAYOUTS_NETWORK"),
        "api-no-db": Case("api", (("database_url", dead_pg),), gone, "PAYOUTS_DATABASE_URL"),
        "worker-no-db": Case("worker", (("database_url", dead_pg),), gone,
                             "PAYOUTS_DATABASE_URL"),
        "worker-no-redis": Case("worker", (("redis_url", dead_redis),), gone,
                                "PAYOUTS_REDIS_URL"),
        "beat-no-broker": Case("beat", (("broker_url", dead_redis),), gone,
                               "PAYOUTS_BROKER_URL"),
        "worker-bad-rpc-password": Case("worker", (("bitcoind_url", "<wrong password>"),), gone,
                                        "PAYOUTS_BITCOIND_URL"),
    }  # fmt: skip


CASES = _cases()
WRONG_RPC_PASSWORD = "wrong-rpc-password-Hq2"


@dataclass(frozen=True)
class Run:
    exit_code: int | None  # None: it did not exit (it started)
    output: str


def _run(ops: OpsSystem, case: Case) -> Run:
    settings = dict(case.settings)
    if settings.get("bitcoind_url") == "<wrong password>":
        real = ops.stack.env["PAYOUTS_BITCOIND_URL"]
        settings["bitcoind_url"] = real.replace(ops.rpc_password, WRONG_RPC_PASSWORD)
    argv = payouts_argv(case.verb)
    if case.verb == "api":
        argv += ["--host", "127.0.0.1", "--port", str(free_port())]
    process = subprocess.Popen(
        argv, env=ops.env(**settings), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )  # fmt: skip
    try:
        output, _ = process.communicate(timeout=REFUSAL_TIMEOUT_SECONDS)
        return Run(process.returncode, output)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        return Run(None, output)


@pytest.fixture(scope="module")
def runs(ops: OpsSystem) -> dict[str, Run]:
    """Every refusal at once: each is a fresh Python process that takes a second to boot."""
    with concurrent.futures.ThreadPoolExecutor(len(CASES)) as pool:
        futures = {name: pool.submit(_run, ops, case) for name, case in CASES.items()}
        return {name: future.result() for name, future in futures.items()}


@pytest.mark.parametrize("name", sorted(CASES))
def test_refuses_to_start_with_one_line_naming_the_setting(
    runs: dict[str, Run], ops: OpsSystem, name: str
) -> None:
    case, run = CASES[name], runs[name]

    assert run.exit_code == case.exit_code, run.output[-2000:]
    [line] = [ln for ln in run.output.splitlines() if ln.startswith(f"payouts {case.verb}: ")]
    assert case.names in line
    for secret in (ops.rpc_password, WRONG_RPC_PASSWORD, ops.flower_auth[1]):
        assert secret not in run.output


def test_readyz_is_200_with_every_check_ok_when_everything_is_up(ops: OpsSystem) -> None:
    reply = httpx.get(f"{ops.stack.api_url}/readyz", timeout=10)

    assert reply.status_code == 200, reply.text
    checks = reply.json()["checks"]
    assert set(checks) == {"database", "redis", "broker", "node", "wallet", "chain"}
    assert {c["status"] for c in checks.values()} == {"ok"}


def test_readyz_is_503_naming_the_chain_when_pointed_at_the_wrong_network(
    ops: OpsSystem, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The API process refuses to start with this setting (above), so ask an in-process app
    # that reads the same real services.
    monkeypatch.setenv("PAYOUTS_NETWORK", "mainnet")

    with TestClient(create_app()) as client:
        reply = client.get("/readyz")

    assert reply.status_code == 503
    body = reply.json()
    assert body["checks"]["chain"]["status"] == "failed"
    assert body["checks"]["chain"]["setting"] == "PAYOUTS_NETWORK"
    assert "'regtest'" in body["checks"]["chain"]["detail"]
    assert {n for n, c in body["checks"].items() if c["status"] != "ok"} == {"chain"}
    assert "PAYOUTS_NETWORK" in body["error"]["message"]
    assert ops.rpc_password not in reply.text
