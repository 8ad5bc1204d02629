"""/readyz and /metrics through the real app (TestClient, SQLite); the services behind the
checks are replaced by small fakes, the integration tier uses real ones."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import fakeredis
import pytest
from prometheus_client.parser import text_string_to_metric_families

from shared.ops import health, metrics
from shared.ops.health import CheckResult, Status

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # Starlette's nudge towards httpx2, as in tests/unit/api
    from fastapi.testclient import TestClient

from api.app import create_app
from tests.unit.shared.factories import use_app_database


@pytest.fixture
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    # No node here (port 1): the balance is left out, the route still answers.
    no_node = "http://u:p@127.0.0.1:1/wallet/hot"
    use_app_database(monkeypatch, tmp_path / "ops.db", PAYOUTS_BITCOIND_URL=no_node)
    with TestClient(create_app(), raise_server_exceptions=False) as test_client:
        yield test_client


def checks_returning(monkeypatch: pytest.MonkeyPatch, failing: dict[str, str]) -> None:
    def fake_run_checks(settings: object, timeout: float = 0) -> list[CheckResult]:
        return [
            CheckResult(name, Status.FAILED, f"PAYOUTS_{name.upper()}", failing[name])
            if name in failing
            else CheckResult(name, Status.OK, f"PAYOUTS_{name.upper()}")
            for name in health.ORDER
        ]

    monkeypatch.setattr(health, "run_checks", fake_run_checks)


def test_readyz_is_200_with_every_check_ok(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    checks_returning(monkeypatch, failing={})

    reply = client.get("/readyz")

    assert reply.status_code == 200
    body = reply.json()
    assert body["status"] == "ready" and "error" not in body
    assert set(body["checks"]) == set(health.ORDER)
    assert {c["status"] for c in body["checks"].values()} == {"ok"}


def test_readyz_is_503_naming_the_failed_check_and_its_setting(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    checks_returning(monkeypatch, failing={"chain": "node is on 'main'"})

    reply = client.get("/readyz")

    assert reply.status_code == 503
    body = reply.json()
    assert body["status"] == "not_ready"
    assert body["checks"]["chain"] == {
        "status": "failed", "setting": "PAYOUTS_CHAIN", "detail": "node is on 'main'",
    }  # fmt: skip
    assert body["error"]["code"] == "not_ready"
    assert "chain: node is on 'main' (check PAYOUTS_CHAIN)" in body["error"]["message"]


def test_readyz_and_metrics_need_no_api_key_and_healthz_stays_trivial(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    checks_returning(monkeypatch, failing={})
    monkeypatch.setattr(metrics, "counter_redis", lambda: fakeredis.FakeRedis())

    assert client.get("/readyz").status_code == 200
    assert client.get("/metrics").status_code == 200
    assert client.get("/healthz").json() == {"status": "ok"}


def test_metrics_serves_the_prometheus_text_format_with_the_payout_families(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(metrics, "counter_redis", lambda: fakeredis.FakeRedis())

    reply = client.get("/metrics")

    assert reply.headers["content-type"].startswith("text/plain; version=")
    names = {family.name for family in text_string_to_metric_families(reply.text)}
    assert {
        "payouts_by_state",
        "payouts_transitions",
        "payouts_claim_conflicts",
        "payouts_broadcast_outcomes",
        "payouts_approval_to_broadcast_seconds",
        "payouts_oldest_unpaid_approval_age_seconds",
        "payouts_metrics_source_up",
    } <= names


def test_metrics_speaks_openmetrics_when_prometheus_asks_for_it(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(metrics, "counter_redis", lambda: fakeredis.FakeRedis())

    reply = client.get("/metrics", headers={"Accept": "application/openmetrics-text"})

    assert reply.headers["content-type"].startswith("application/openmetrics-text")
    assert reply.text.rstrip().endswith("# EOF")


def test_the_ops_routes_are_in_the_openapi_document(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]

    assert {"/healthz", "/readyz", "/metrics"} <= set(paths)
    assert "503" in paths["/readyz"]["get"]["responses"]
