"""Every payout endpoint: 401 without a valid key (with a Bearer challenge), 403 without its
scope, allowed with its scope or admin."""

from __future__ import annotations

import uuid

import httpx
import pytest
from fastapi.testclient import TestClient

from shared.infra.db import session_scope
from shared.intake.api_keys import revoke_api_key
from tests.unit.api.conftest import bearer
from tests.unit.shared.factories import REGTEST_P2WPKH

# (method, path, json body, scope it needs, the status that proves auth let it through)
PAYOUT = "00000000-0000-4000-8000-000000000000"
TXID = "ab" * 32
ENDPOINTS = [
    ("POST", "/v1/payouts", {"destination": REGTEST_P2WPKH, "amount_sats": 1000}, "creator", 201),
    ("GET", "/v1/payouts", None, "reader", 200),
    ("GET", f"/v1/payouts/{PAYOUT}", None, "reader", 404),
    ("GET", f"/v1/payouts/{PAYOUT}/events", None, "reader", 404),
    ("POST", f"/v1/payouts/{PAYOUT}/approve", None, "approver", 404),
    ("POST", f"/v1/payouts/{PAYOUT}/cancel", None, "approver", 404),
    ("GET", "/v1/transactions", None, "reader", 200),
    ("GET", f"/v1/transactions/{TXID}", None, "reader", 404),
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


# Every route that needs a key, including those that take a body. Authentication reads only
# headers, so it must answer before anything looks at the body.
AUTHENTICATED_ROUTES = [
    ("POST", "/v1/payouts", "creator"),
    ("GET", "/v1/payouts", "reader"),
    ("GET", f"/v1/payouts/{PAYOUT}", "reader"),
    ("GET", f"/v1/payouts/{PAYOUT}/events", "reader"),
    ("POST", f"/v1/payouts/{PAYOUT}/approve", "approver"),
    ("POST", f"/v1/payouts/{PAYOUT}/cancel", "approver"),
    ("POST", f"/v1/payouts/{PAYOUT}/manual/claim", "signer"),
    ("POST", f"/v1/payouts/{PAYOUT}/manual/submit", "signer"),
    ("POST", f"/v1/payouts/{PAYOUT}/manual/release", "signer"),
    ("GET", "/v1/transactions", "reader"),
    ("GET", f"/v1/transactions/{TXID}", "reader"),
    # A malformed txid is still refused for the missing key first: no 422 tells a stranger
    # anything about the route.
    ("GET", "/v1/transactions/not-a-txid", "reader"),
]
# A key lacking the scope of each route.
LACKS_SCOPE = {"creator": "approver", "reader": "signer", "approver": "creator", "signer": "reader"}
JSON_TYPE = {"Content-Type": "application/json"}
# (id, raw body, headers): bodies each route would refuse with 400, 413, 415 or 422.
BAD_BODIES = [
    ("malformed-json", b'{"destination": ', JSON_TYPE),
    ("not-utf8", b"\xff\xfe", JSON_TYPE),
    ("json-array", b"[1, 2]", JSON_TYPE),
    ("form-encoded", b"a=1&b=2", {"Content-Type": "application/x-www-form-urlencoded"}),
    ("oversized", b'{"pad": "' + b"x" * 10_000 + b'"}', JSON_TYPE),
]
FORGED = "pp_00000000_" + "A" * 43


@pytest.mark.parametrize(("method", "path", "key"), AUTHENTICATED_ROUTES)
@pytest.mark.parametrize(
    ("content", "headers"), [b[1:] for b in BAD_BODIES], ids=[b[0] for b in BAD_BODIES]
)
@pytest.mark.parametrize("credentials", ["missing", "forged", "basic"])
def test_unauthenticated_request_is_401_whatever_its_body(
    client: TestClient,
    keys: dict[str, str],
    method: str,
    path: str,
    key: str,
    content: bytes,
    headers: dict[str, str],
    credentials: str,
) -> None:
    auth = {
        "missing": {},
        "forged": bearer(FORGED),
        "basic": {"Authorization": f"Basic {keys[key]}"},
    }[credentials]

    response = client.request(
        method, path, content=content, headers={"Idempotency-Key": "k", **headers, **auth}
    )

    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["error"]["code"] == "unauthorized"


@pytest.mark.parametrize(("method", "path", "key"), AUTHENTICATED_ROUTES)
@pytest.mark.parametrize(
    ("content", "headers"), [b[1:] for b in BAD_BODIES], ids=[b[0] for b in BAD_BODIES]
)
def test_key_without_the_scope_is_403_whatever_its_body(
    client: TestClient,
    keys: dict[str, str],
    method: str,
    path: str,
    key: str,
    content: bytes,
    headers: dict[str, str],
) -> None:
    response = client.request(
        method,
        path,
        content=content,
        headers={"Idempotency-Key": "k", **headers, **bearer(keys[LACKS_SCOPE[key]])},
    )

    assert response.status_code == 403, response.text
    assert response.json()["error"]["code"] == "forbidden"


def test_authenticated_malformed_json_is_still_400(
    client: TestClient, keys: dict[str, str]
) -> None:
    response = client.post(
        "/v1/payouts",
        content=b"{",
        headers=bearer(keys["creator"], **{"Idempotency-Key": "k"}, **JSON_TYPE),
    )

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "malformed_json"


def test_each_request_looks_its_key_up_once(
    client: TestClient, keys: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared.intake import api_keys

    lookups: list[str] = []
    real = api_keys.verify_api_key

    def counting(session: object, secret: str) -> object:
        lookups.append(secret)
        return real(session, secret)  # type: ignore[arg-type]

    monkeypatch.setattr(api_keys, "verify_api_key", counting)

    response = client.post(
        "/v1/payouts",
        json={"destination": REGTEST_P2WPKH, "amount_sats": 1000},
        headers=bearer(keys["creator"], **{"Idempotency-Key": "once"}),
    )

    assert response.status_code == 201
    assert lookups == [keys["creator"]]
