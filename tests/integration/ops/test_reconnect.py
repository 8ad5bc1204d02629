"""Redis or PostgreSQL going away and coming back: /readyz says which one is missing, and the
API, the workers and beat carry on by themselves once it is back (no restart)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from cli.processes import wait_until
from tests.integration.ops.conftest import OpsSystem
from tests.integration.ops.proxy import CuttableProxy

# Seconds for the system to notice an outage's end: Celery's reconnect backoff starts at a
# couple of seconds, and the sweeper re-publishes an approval that lost its message after
# PAYOUTS_SWEEP_AFTER_SECONDS (3 here).
RECOVERY_SECONDS = 60


def _readiness(ops: OpsSystem) -> tuple[int, dict[str, str]]:
    reply = httpx.get(f"{ops.stack.api_url}/readyz", timeout=15)
    return reply.status_code, {n: c["status"] for n, c in reply.json()["checks"].items()}


@contextmanager
def outage(proxy: CuttableProxy) -> Iterator[None]:
    proxy.cut()
    try:
        yield
    finally:
        proxy.restore()


def _wait_ready(ops: OpsSystem) -> None:
    wait_until(lambda: _readiness(ops)[0] == 200, RECOVERY_SECONDS, "/readyz to be 200", 0.5)


def test_redis_outage_is_reported_and_payouts_flow_again_once_it_is_back(ops: OpsSystem) -> None:
    stack = ops.stack
    with outage(ops.redis_proxy):
        status, checks = _readiness(ops)
        assert status == 503
        assert (checks["redis"], checks["broker"], checks["database"]) == ("failed", "failed", "ok")
        # The approval commits; its message cannot be published (the sweeper will resend it).
        during = stack.create_and_approve(61_000)

    _wait_ready(ops)
    after = stack.create_and_approve(62_000)
    stack.wait_for_states([during["id"], after["id"]], {"broadcast"}, timeout=RECOVERY_SECONDS)
    api_log = stack.api.log_path.read_text() if stack.api else ""
    assert "could not publish" not in _lines_about(api_log, after["id"])  # reconnected


def test_postgres_outage_answers_503_and_payouts_flow_again_once_it_is_back(
    ops: OpsSystem,
) -> None:
    stack = ops.stack
    with outage(ops.pg_proxy):
        status, checks = _readiness(ops)
        assert status == 503 and checks["database"] == "failed" and checks["redis"] == "ok"
        with stack.http() as client:
            reply = client.get("/v1/payouts", headers=stack.headers("backend"))
        assert reply.status_code == 503
        assert reply.json()["error"]["code"] == "service_unavailable"

    _wait_ready(ops)
    payout = stack.create_and_approve(63_000)
    stack.wait_for_states([payout["id"]], {"broadcast"}, timeout=RECOVERY_SECONDS)
    assert all(process.alive() for process in ops.processes())


def _lines_about(log: str, payout_id: str) -> str:
    return "\n".join(line for line in log.splitlines() if payout_id in line)
