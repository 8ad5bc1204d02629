"""Every kind of bad request gets a 4xx JSON error and leaves the database untouched."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from tests.integration.api.conftest import BODY_LIMIT, bearer, db_snapshot, queued_messages
from tests.unit.shared.factories import REGTEST_P2WPKH

pytestmark = pytest.mark.integration

GOOD = {"destination": REGTEST_P2WPKH, "amount_sats": 10_000}


def padded_body(size: int) -> bytes:
    skeleton = {**GOOD, "metadata": {"pad": ""}}
    pad = size - len(json.dumps(skeleton))
    return json.dumps({**GOOD, "metadata": {"pad": "x" * pad}}).encode()


def chunked(data: bytes) -> Iterator[bytes]:
    # A generator makes httpx send Transfer-Encoding: chunked (no Content-Length to check).
    for start in range(0, len(data), 1000):
        yield data[start : start + 1000]


JSON = {"Content-Type": "application/json"}
# A well-formed cursor whose timestamp lies before year 1 once converted to UTC.
OUT_OF_RANGE_CURSOR = base64.urlsafe_b64encode(
    b"0001-01-01T00:00:00+01:00|00000000-0000-0000-0000-000000000000"
).decode()

# (name, request kwargs for POST /v1/payouts, expected status, expected error code)
CREATE_CASES: list[tuple[str, dict[str, Any], int, str]] = [
    ("malformed json", {"content": b'{"destination": ', "headers": JSON}, 400, "malformed_json"),
    ("json array", {"content": b"[1, 2]", "headers": JSON}, 422, "invalid_request"),
    ("empty body", {"content": b"", "headers": JSON}, 422, "invalid_request"),
    ("form encoded", {"content": json.dumps(GOOD).encode()}, 415, "unsupported_media_type"),
    ("unknown field", {"json": {**GOOD, "priority": "high"}}, 422, "invalid_request"),
    ("amount zero", {"json": {**GOOD, "amount_sats": 0}}, 422, "invalid_request"),
    ("amount negative", {"json": {**GOOD, "amount_sats": -10_000}}, 422, "invalid_request"),
    ("amount float", {"json": {**GOOD, "amount_sats": 10_000.5}}, 422, "invalid_request"),
    ("amount string", {"json": {**GOOD, "amount_sats": "10000"}}, 422, "invalid_request"),
    ("amount bool", {"json": {**GOOD, "amount_sats": True}}, 422, "invalid_request"),
    ("below dust", {"json": {**GOOD, "amount_sats": 545}}, 422, "invalid_request"),
    ("above cap", {"json": {**GOOD, "amount_sats": 50_000_001}}, 422, "invalid_request"),
    ("huge amount", {"json": {**GOOD, "amount_sats": 10**40}}, 422, "invalid_request"),
    (
        "mainnet address",
        {"json": {**GOOD, "destination": "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"}},
        422,
        "invalid_request",
    ),
    (
        "testnet bech32 address",
        {"json": {**GOOD, "destination": "tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx"}},
        422,
        "invalid_request",
    ),
    (
        "bad checksum",
        {"json": {**GOOD, "destination": REGTEST_P2WPKH[:-1] + "q"}},
        422,
        "invalid_request",
    ),
    ("not an address", {"json": {**GOOD, "destination": "hello"}}, 422, "invalid_request"),
    ("metadata not object", {"json": {**GOOD, "metadata": "x"}}, 422, "invalid_request"),
    (
        "metadata NaN",
        {
            "content": b'{"destination": "%s", "amount_sats": 1000, "metadata": {"x": NaN}}'
            % REGTEST_P2WPKH.encode(),
            "headers": JSON,
        },
        422,
        "invalid_request",
    ),
    (
        "metadata 1e400",
        {
            "content": b'{"destination": "%s", "amount_sats": 1000, "metadata": {"x": 1e400}}'
            % REGTEST_P2WPKH.encode(),
            "headers": JSON,
        },
        422,
        "invalid_request",
    ),
    (
        "metadata lone surrogate",
        {
            "content": b'{"destination": "%s", "amount_sats": 1000, "metadata": %s}'
            % (REGTEST_P2WPKH.encode(), rb'{"a": "\ud800"}'),
            "headers": JSON,
        },
        422,
        "invalid_request",
    ),
    (
        "metadata key lone surrogate",
        {
            "content": b'{"destination": "%s", "amount_sats": 1000, "metadata": %s}'
            % (REGTEST_P2WPKH.encode(), rb'{"k": {"\udfff": [1]}}'),
            "headers": JSON,
        },
        422,
        "invalid_request",
    ),
    (
        "metadata too deep",
        {"json": {**GOOD, "metadata": json.loads('{"a":' * 40 + "1" + "}" * 40)}},
        422,
        "invalid_request",
    ),
    (
        "nested arrays",
        {
            "content": b'{"destination": "%s", "amount_sats": 1000, "metadata": {"x": %s}}'
            % (REGTEST_P2WPKH.encode(), b"[" * 1500 + b"]" * 1500),
            "headers": JSON,
        },
        400,
        "bad_request",
    ),
    (
        "oversized declared",
        {"content": padded_body(BODY_LIMIT + 1), "headers": JSON},
        413,
        "body_too_large",
    ),
    (
        "oversized chunked",
        {"content": chunked(padded_body(BODY_LIMIT * 3)), "headers": JSON},
        413,
        "body_too_large",
    ),
]


@pytest.fixture
def seeded(client: httpx.Client, keys: dict[str, str], broker: redis.Redis) -> dict[str, str]:
    """One payout created with key "seed" and approved: the state the refusals run against."""
    made = client.post(
        "/v1/payouts", json=GOOD, headers=bearer(keys["creator"], **{"Idempotency-Key": "seed"})
    )
    assert made.status_code == 201
    payout_id = made.json()["id"]
    assert (
        client.post(
            f"/v1/payouts/{payout_id}/approve", headers=bearer(keys["approver"])
        ).status_code
        == 200
    )
    return {"id": payout_id}


def assert_refused_without_change(
    response: httpx.Response, status: int, code: str, before: Any, after: Any
) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == code and error["message"]
    assert after == before


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [case[1:] for case in CREATE_CASES],
    ids=[case[0] for case in CREATE_CASES],
)
def test_bad_create_is_refused_and_changes_nothing(
    client: httpx.Client,
    keys: dict[str, str],
    seeded: dict[str, str],
    pg_db: str,
    kwargs: dict[str, Any],
    status: int,
    code: str,
) -> None:
    headers = bearer(keys["creator"], **{"Idempotency-Key": "fresh"}) | kwargs.pop("headers", {})
    before = db_snapshot(pg_db)

    response = client.post("/v1/payouts", headers=headers, **kwargs)

    assert_refused_without_change(response, status, code, before, db_snapshot(pg_db))


def test_missing_idempotency_key_is_400(
    client: httpx.Client, keys: dict[str, str], seeded: dict[str, str], pg_db: str
) -> None:
    before = db_snapshot(pg_db)

    response = client.post("/v1/payouts", json=GOOD, headers=bearer(keys["creator"]))

    assert_refused_without_change(
        response, 400, "idempotency_key_required", before, db_snapshot(pg_db)
    )


def test_reused_key_with_another_body_is_422(
    client: httpx.Client, keys: dict[str, str], seeded: dict[str, str], pg_db: str
) -> None:
    before = db_snapshot(pg_db)

    response = client.post(
        "/v1/payouts",
        json={**GOOD, "amount_sats": 10_001},
        headers=bearer(keys["creator"], **{"Idempotency-Key": "seed"}),
    )

    assert_refused_without_change(
        response, 422, "idempotency_key_reused", before, db_snapshot(pg_db)
    )


def test_approving_an_approved_payout_is_409(
    client: httpx.Client,
    keys: dict[str, str],
    seeded: dict[str, str],
    pg_db: str,
    broker: redis.Redis,
) -> None:
    before = db_snapshot(pg_db)
    queued_before = len(queued_messages(broker))

    response = client.post(f"/v1/payouts/{seeded['id']}/approve", headers=bearer(keys["admin"]))

    assert_refused_without_change(response, 409, "invalid_state", before, db_snapshot(pg_db))
    assert len(queued_messages(broker)) == queued_before


def test_cancel_reason_with_a_nul_byte_is_422(
    client: httpx.Client, keys: dict[str, str], seeded: dict[str, str], pg_db: str
) -> None:
    # PostgreSQL text columns cannot hold NUL; this must be refused as input, not crash.
    before = db_snapshot(pg_db)

    response = client.post(
        f"/v1/payouts/{seeded['id']}/cancel",
        json={"reason": "oops\u0000"},
        headers=bearer(keys["admin"]),
    )

    assert_refused_without_change(response, 422, "invalid_request", before, db_snapshot(pg_db))


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/v1/payouts/not-a-uuid", 422, "invalid_request"),
        ("GET", "/v1/payouts/00000000-0000-4000-8000-000000000000", 404, "not_found"),
        ("POST", "/v1/payouts/00000000-0000-4000-8000-000000000000/approve", 404, "not_found"),
        ("GET", "/v1/payouts?limit=1000", 422, "invalid_request"),
        ("GET", "/v1/payouts?state=sent", 422, "invalid_request"),
        ("GET", "/v1/payouts?cursor=!!", 422, "invalid_request"),
        ("GET", f"/v1/payouts?cursor={OUT_OF_RANGE_CURSOR}", 422, "invalid_request"),
        ("GET", "/v1/nowhere", 404, "not_found"),
        ("PUT", "/v1/payouts", 405, "method_not_allowed"),
    ],
)
def test_bad_paths_and_queries_are_json_4xx(
    client: httpx.Client,
    keys: dict[str, str],
    seeded: dict[str, str],
    pg_db: str,
    method: str,
    path: str,
    status: int,
    code: str,
) -> None:
    before = db_snapshot(pg_db)

    response = client.request(method, path, headers=bearer(keys["admin"]))

    assert_refused_without_change(response, status, code, before, db_snapshot(pg_db))


def test_manual_submit_takes_a_signed_transaction_the_schema_allows(
    client: httpx.Client, keys: dict[str, str], seeded: dict[str, str]
) -> None:
    # 150,000 hex characters (a transaction spending many small coins): well within the
    # schema's 200,000, and far above the server's PAYOUTS_MAX_BODY_BYTES.
    body = json.dumps({"tx_hex": "ab" * 75_000}).encode()
    assert len(body) > BODY_LIMIT

    submitted = client.post(
        f"/v1/payouts/{seeded['id']}/manual/submit",
        content=body,
        headers=bearer(keys["signer"], **JSON),
    )
    created = client.post(
        "/v1/payouts",
        content=json.dumps({**GOOD, "metadata": {"tx_hex": "ab" * 75_000}}).encode(),
        headers=bearer(keys["creator"], **{"Idempotency-Key": "big"}, **JSON),
    )

    assert submitted.status_code != 413, submitted.text
    assert created.status_code == 413
