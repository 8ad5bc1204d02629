"""Malformed requests get a 4xx `{"error": {code, message}}` and change nothing; nothing a
client sends produces a 500."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.exc import OperationalError

from shared.infra.db import get_sessionmaker
from shared.intake import payouts as intake
from tests.unit.api.conftest import bearer
from tests.unit.shared.factories import REGTEST_P2WPKH, row_counts

LIMIT = 4096  # PAYOUTS_MAX_BODY_BYTES in conftest


def post_raw(
    client: TestClient, secret: str, content: bytes | Iterator[bytes], **headers: str
) -> httpx.Response:
    return client.post(
        "/v1/payouts",
        content=content,
        headers=bearer(secret, **{"Idempotency-Key": "k1", "Content-Type": "application/json"})
        | headers,
    )


def nothing_stored() -> bool:
    with get_sessionmaker()() as session:
        return row_counts(session) == {"payouts": 0, "payout_events": 0, "idempotency_keys": 0}


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["message"]


@pytest.mark.parametrize("content", [b"{", b'{"destination": }', b"\xff\xfe", b"nul"])
def test_malformed_json_is_400(client: TestClient, keys: dict[str, str], content: bytes) -> None:
    assert_error(post_raw(client, keys["creator"], content), 400, "malformed_json")
    assert nothing_stored()


@pytest.mark.parametrize("content", [b"[]", b'"text"', b"42", b"null"])
def test_json_that_is_not_an_object_is_422(
    client: TestClient, keys: dict[str, str], content: bytes
) -> None:
    assert_error(post_raw(client, keys["creator"], content), 422, "invalid_request")
    assert nothing_stored()


def test_empty_body_is_422_asking_for_a_body(client: TestClient, keys: dict[str, str]) -> None:
    response = post_raw(client, keys["creator"], b"")

    assert_error(response, 422, "invalid_request")
    assert "body is required" in response.json()["error"]["message"]


def test_form_encoded_body_is_415(client: TestClient, keys: dict[str, str]) -> None:
    body = json.dumps({"destination": REGTEST_P2WPKH, "amount_sats": 1000}).encode()

    response = post_raw(
        client, keys["creator"], body, **{"Content-Type": "application/x-www-form-urlencoded"}
    )

    assert_error(response, 415, "unsupported_media_type")
    assert nothing_stored()


def test_body_over_the_declared_limit_is_413(client: TestClient, keys: dict[str, str]) -> None:
    body = json.dumps(
        {"destination": REGTEST_P2WPKH, "amount_sats": 1000, "metadata": {"pad": "x" * LIMIT}}
    ).encode()

    assert_error(post_raw(client, keys["creator"], body), 413, "body_too_large")
    assert nothing_stored()


def test_chunked_body_over_the_limit_is_413(client: TestClient, keys: dict[str, str]) -> None:
    # A generator body is sent with Transfer-Encoding: chunked, i.e. without Content-Length.
    def chunks() -> Iterator[bytes]:
        yield b'{"destination": "' + REGTEST_P2WPKH.encode() + b'", "metadata": {"pad": "'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"}, "amount_sats": 1000}'

    assert_error(post_raw(client, keys["creator"], chunks()), 413, "body_too_large")
    assert nothing_stored()


def test_body_just_under_the_limit_is_accepted(client: TestClient, keys: dict[str, str]) -> None:
    skeleton = {"destination": REGTEST_P2WPKH, "amount_sats": 1000, "metadata": {"pad": ""}}
    pad = LIMIT - len(json.dumps(skeleton).encode())
    body = json.dumps({**skeleton, "metadata": {"pad": "x" * pad}}).encode()
    assert len(body) == LIMIT

    assert post_raw(client, keys["creator"], body).status_code == 201


@pytest.mark.parametrize(
    "metadata",
    [rb'{"a": "\ud800"}', rb'{"\udfff": 1}', rb'{"a": {"b": ["x\udc00"]}}'],
    ids=["value", "key", "nested"],
)
def test_lone_surrogate_in_metadata_is_422_naming_the_field(
    client: TestClient, keys: dict[str, str], metadata: bytes
) -> None:
    body = b'{"destination": "%s", "amount_sats": 1000, "metadata": %s}' % (
        REGTEST_P2WPKH.encode(),
        metadata,
    )

    response = post_raw(client, keys["creator"], body)

    assert_error(response, 422, "invalid_request")
    message = response.json()["error"]["message"]
    assert message.startswith("metadata") and "surrogate" in message
    assert nothing_stored()


def test_out_of_range_cursor_is_422(client: TestClient, keys: dict[str, str]) -> None:
    raw = b"0001-01-01T00:00:00+01:00|00000000-0000-0000-0000-000000000000"
    cursor = base64.urlsafe_b64encode(raw).decode()

    response = client.get("/v1/payouts", params={"cursor": cursor}, headers=bearer(keys["reader"]))

    assert_error(response, 422, "invalid_request")
    assert "cursor" in response.json()["error"]["message"]


def test_unknown_route_is_404_json(client: TestClient) -> None:
    assert_error(client.get("/v2/nothing"), 404, "not_found")


def test_wrong_method_is_405_json(client: TestClient, keys: dict[str, str]) -> None:
    assert_error(
        client.delete("/v1/payouts", headers=bearer(keys["admin"])), 405, "method_not_allowed"
    )


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        ("/v1/payouts", {"GET", "POST"}),  # two routes share this path
        ("/v1/payouts/00000000-0000-4000-8000-000000000000", {"GET"}),
        ("/v1/payouts/00000000-0000-4000-8000-000000000000/cancel", {"POST"}),
    ],
)
def test_405_allow_lists_every_method_of_the_path(
    client: TestClient, keys: dict[str, str], path: str, allowed: set[str]
) -> None:
    # Found by Schemathesis: Allow named only the first route's methods (POST, not GET).
    for method in ("DELETE", "PUT", "OPTIONS"):
        response = client.request(method, path, headers=bearer(keys["admin"]))

        assert_error(response, 405, "method_not_allowed")
        assert {m.strip() for m in response.headers["allow"].split(",")} == allowed


def test_unexpected_failure_is_a_json_500_without_internals(
    client: TestClient, keys: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: object, **__: object) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(intake, "list_payouts", broken)

    response = client.get("/v1/payouts", headers=bearer(keys["reader"]))

    assert_error(response, 500, "internal_error")
    assert "secret internals" not in response.text


def test_database_outage_is_a_retryable_503(
    client: TestClient, keys: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def unreachable(*_: object, **__: object) -> None:
        raise OperationalError("SELECT 1", {}, ConnectionError("server closed the connection"))

    monkeypatch.setattr(intake, "list_payouts", unreachable)

    response = client.get("/v1/payouts", headers=bearer(keys["reader"]))

    assert_error(response, 503, "service_unavailable")
    assert response.headers["retry-after"] == "5"
