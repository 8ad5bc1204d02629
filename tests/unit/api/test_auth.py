"""Every payout endpoint: 401 without a valid key (with a Bearer challenge), 403 without its
scope, allowed with its scope or admin."""

from __future__ import annotations

import uuid

import httpx
import pytest
from fastapi.testclient import TestClient

from shared.api_keys import revoke_api_key
from shared.db import session_scope
from tests.unit.api.conftest import bearer
from tests.unit.shared.factories import REGTEST_P2WPKH

# (method, path, json body, scope it needs, the status that proves auth let it through)
PAYOUT = "00000000-0000-4000-8000-000000000000"
ENDPOINTS = [
    ("POST", "/v1/payouts", {"destination": REGTEST_P2WPKH, "amount_sats": 1000}, "creator", 201),
    ("GET", "/v1/payouts", None, "reader", 200),
    ("GET", f"/v1/payouts/{PAYOUT}", None, "reader", 404),
    ("GET", f"/v1/payouts/{PAYOUT}/events", None, "reader", 404),
    ("POST", f"/v1/payouts/{PAYOUT}/approve", None, "approver", 404),
    ("POST", f"/v1/payouts/{PAYOUT}/cancel", None, "approver", 404),
]
# A key that lacks the scope for each endpoint above (signer has only payouts:sign).
WRONG_KEY = {"creator": "approver", "reader": "signer", "approver": "creator"}


def call(
    client: TestClient, method: str, path: str, body: object, headers: dict[str, str]
) -> httpx.Response:
    headers = {"Idempotency-Key": uuid.uuid4().hex, **headers}
    return client.request(method, path, json=body, headers=headers)


@pytest.mark.parametrize(("method", "path", "body", "key", "ok"), ENDPOINTS)
class TestEveryEndpoint:
    def test_no_key_is_401_with_bearer_challenge(
        self, client: TestClient, keys: dict[str, str], method: str, path: str, body: object,
        key: str, ok: int,
    ) -> None:  # fmt: skip
        response = call(client, method, path, body, {})

        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["error"]["code"] == "unauthorized"

    def test_unknown_key_is_401(
        self, client: TestClient, keys: dict[str, str], method: str, path: str, body: object,
        key: str, ok: int,
    ) -> None:  # fmt: skip
        forged = "pp_00000000_" + "A" * 43

        response = call(client, method, path, body, bearer(forged))

        assert response.status_code == 401

    def test_key_without_the_scope_is_403(
        self, client: TestClient, keys: dict[str, str], method: str, path: str, body: object,
        key: str, ok: int,
    ) -> None:  # fmt: skip
        response = call(client, method, path, body, bearer(keys[WRONG_KEY[key]]))

        assert response.status_code == 403
        assert response.json()["error"]["code"] == "forbidden"

    def test_key_with_the_scope_gets_through(
        self, client: TestClient, keys: dict[str, str], method: str, path: str, body: object,
        key: str, ok: int,
    ) -> None:  # fmt: skip
        assert call(client, method, path, body, bearer(keys[key])).status_code == ok

    def test_admin_gets_through(
        self, client: TestClient, keys: dict[str, str], method: str, path: str, body: object,
        key: str, ok: int,
    ) -> None:  # fmt: skip
        assert call(client, method, path, body, bearer(keys["admin"])).status_code == ok


def test_revoked_key_is_401(client: TestClient, keys: dict[str, str]) -> None:
    with session_scope() as session:
        revoke_api_key(session, "reader")

    response = client.get("/v1/payouts", headers=bearer(keys["reader"]))

    assert response.status_code == 401
    assert response.json()["error"]["message"] == "invalid or revoked API key"


def test_basic_auth_is_not_accepted(client: TestClient, keys: dict[str, str]) -> None:
    response = client.get("/v1/payouts", headers={"Authorization": f"Basic {keys['reader']}"})

    assert response.status_code == 401


def test_unauthenticated_caller_gets_401_before_any_body_complaint(client: TestClient) -> None:
    response = client.post(
        "/v1/payouts", json={"amount_sats": "lots"}, headers={"Idempotency-Key": "k"}
    )

    assert response.status_code == 401


def test_healthz_and_docs_need_no_key(client: TestClient) -> None:
    assert client.get("/healthz").status_code == 200
    assert client.get("/openapi.json").status_code == 200
