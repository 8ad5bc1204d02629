"""Liveness and the OpenAPI document."""

from __future__ import annotations

import logging

import pytest
from fastapi.testclient import TestClient

from shared.infra.settings import get_settings, reset_settings_cache
from tests.unit.api.conftest import bearer


def test_healthz_is_ok(client: TestClient) -> None:
    response = client.get("/healthz")

    assert (response.status_code, response.json()) == (200, {"status": "ok"})


def test_openapi_documents_every_payout_route_and_bearer_auth(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()

    paths = spec["paths"]
    assert {"post", "get"} <= set(paths["/v1/payouts"])
    for path in ("/v1/payouts/{payout_id}", "/v1/payouts/{payout_id}/events"):
        assert "get" in paths[path]
    for action in ("approve", "cancel"):
        assert "post" in paths[f"/v1/payouts/{{payout_id}}/{action}"]
    schemes = spec["components"]["securitySchemes"]
    assert any(s.get("scheme", "").lower() == "bearer" for s in schemes.values())
    create = paths["/v1/payouts"]["post"]
    assert any(p["name"] == "Idempotency-Key" for p in create["parameters"])
    assert {"201", "200", "401", "403", "413", "422"} <= set(create["responses"])


def test_swagger_ui_is_served(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200


METRICS_TOKEN = "metrics-secret-0123456789abcdef"


def test_metrics_are_open_when_no_token_is_set(client: TestClient) -> None:
    response = client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "payouts_" in response.text


@pytest.fixture
def metrics_token(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("PAYOUTS_METRICS_TOKEN", METRICS_TOKEN)
    reset_settings_cache()
    return METRICS_TOKEN


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Bearer {METRICS_TOKEN}x"},
        {"Authorization": f"Basic {METRICS_TOKEN}"},
        {"Authorization": METRICS_TOKEN},
    ],
    ids=["none", "wrong", "longer", "basic", "no-scheme"],
)
def test_metrics_token_when_set_is_required(
    client: TestClient,
    metrics_token: str,
    headers: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.DEBUG):
        response = client.get("/metrics", headers=headers)

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["error"]["code"] == "unauthorized"
    assert metrics_token not in response.text
    assert metrics_token not in caplog.text


def test_metrics_token_when_set_lets_prometheus_in(
    client: TestClient, metrics_token: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        response = client.get("/metrics", headers={"Authorization": f"Bearer {metrics_token}"})

    assert response.status_code == 200
    assert "payouts_" in response.text
    assert metrics_token not in caplog.text


def test_an_api_key_is_not_a_metrics_token(
    client: TestClient, keys: dict[str, str], metrics_token: str
) -> None:
    assert client.get("/metrics", headers=bearer(keys["admin"])).status_code == 401


def test_metrics_token_is_a_secret_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYOUTS_METRICS_TOKEN", METRICS_TOKEN)
    reset_settings_cache()

    assert METRICS_TOKEN not in repr(get_settings())
