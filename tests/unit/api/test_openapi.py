"""The OpenAPI document says what the API really does: required headers, every error status
a route can answer, and the media type of /metrics."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from tests.unit.api.conftest import bearer
from tests.unit.shared.factories import REGTEST_P2WPKH

SPEC: dict[str, Any] = create_app().openapi()
OPERATIONS = [
    (method.upper(), path, operation)
    for path, item in SPEC["paths"].items()
    for method, operation in item.items()
]
ERROR_REF = "#/components/schemas/"


def documented_error(operation: dict[str, Any], status: int) -> dict[str, Any]:
    response = operation["responses"].get(str(status))
    assert response is not None, f"{status} not documented"
    return response


def test_idempotency_key_is_a_required_header() -> None:
    [param] = [p for p in SPEC["paths"]["/v1/payouts"]["post"]["parameters"] if p["in"] == "header"]

    assert param["name"] == "Idempotency-Key"
    assert param["required"] is True
    assert param["schema"]["type"] == "string"
    assert param["schema"]["maxLength"] == 255


def test_missing_idempotency_key_is_still_our_400(client: TestClient, keys: dict[str, str]) -> None:
    response = client.post(
        "/v1/payouts",
        json={"destination": REGTEST_P2WPKH, "amount_sats": 1000},
        headers=bearer(keys["creator"]),
    )

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "idempotency_key_required"


def test_missing_idempotency_key_with_a_bad_body_lists_both(
    client: TestClient, keys: dict[str, str]
) -> None:
    response = client.post(
        "/v1/payouts", json={"amount_sats": "lots"}, headers=bearer(keys["creator"])
    )

    assert response.status_code == 422
    message = response.json()["error"]["message"]
    assert "Idempotency-Key" in message and "amount_sats" in message


@pytest.mark.parametrize(
    ("method", "path", "operation"),
    [op for op in OPERATIONS if "requestBody" in op[2]],
    ids=[f"{m} {p}" for m, p, o in OPERATIONS if "requestBody" in o],
)
def test_every_route_with_a_body_documents_400_413_415(
    method: str, path: str, operation: dict[str, Any]
) -> None:
    for status in (400, 413, 415):
        response = documented_error(operation, status)
        schema = response["content"]["application/json"]["schema"]
        assert schema["required"] == ["error"]


@pytest.mark.parametrize(
    ("method", "path", "operation"),
    [op for op in OPERATIONS if op[1].startswith("/v1/")],
    ids=[f"{m} {p}" for m, p, _ in OPERATIONS if p.startswith("/v1/")],
)
def test_every_v1_route_documents_401_403_and_503(
    method: str, path: str, operation: dict[str, Any]
) -> None:
    # 503: the database (every route, and the key lookup) or the node (manual routes) is down.
    for status in (401, 403, 503):
        documented_error(operation, status)


def test_readyz_503_body_is_documented() -> None:
    response = documented_error(SPEC["paths"]["/readyz"]["get"], 503)

    schema = response["content"]["application/json"]["schema"]
    assert schema["$ref"].startswith(ERROR_REF)
    name = schema["$ref"].removeprefix(ERROR_REF)
    assert {"status", "checks", "error"} <= set(SPEC["components"]["schemas"][name]["properties"])


def test_metrics_is_documented_as_prometheus_text_without_a_json_schema() -> None:
    operation = SPEC["paths"]["/metrics"]["get"]
    content = operation["responses"]["200"]["content"]

    assert "application/json" not in content
    assert set(content) == {"text/plain", "application/openmetrics-text"}
    assert all("schema" not in media for media in content.values())
    documented_error(operation, 401)
    # The token is optional (only when PAYOUTS_METRICS_TOKEN is set): {} means "or none".
    assert {} in operation["security"] and {"MetricsToken": []} in operation["security"]
    assert SPEC["components"]["securitySchemes"]["MetricsToken"]["scheme"] == "bearer"
