"""Liveness and the OpenAPI document."""

from __future__ import annotations

from fastapi.testclient import TestClient


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
