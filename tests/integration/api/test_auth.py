"""Authentication, scopes and four-eyes approval over real HTTP."""

from __future__ import annotations

import httpx
import pytest
import redis

from tests.integration.api.conftest import ApiServer, bearer, db_snapshot
from tests.unit.shared.factories import REGTEST_P2WPKH

pytestmark = pytest.mark.integration

BODY = {"destination": REGTEST_P2WPKH, "amount_sats": 10_000}
SOME_ID = "00000000-0000-4000-8000-000000000000"


def test_requests_without_a_key_are_401_with_a_bearer_challenge(
    client: httpx.Client, keys: dict[str, str], pg_db: str
) -> None:
    before = db_snapshot(pg_db)
    for method, path in [
        ("POST", "/v1/payouts"),
        ("GET", "/v1/payouts"),
        ("GET", f"/v1/payouts/{SOME_ID}"),
        ("GET", f"/v1/payouts/{SOME_ID}/events"),
        ("POST", f"/v1/payouts/{SOME_ID}/approve"),
        ("POST", f"/v1/payouts/{SOME_ID}/cancel"),
    ]:
        response = client.request(method, path, json=BODY, headers={"Idempotency-Key": "k"})
        assert response.status_code == 401, (method, path)
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["error"]["code"] == "unauthorized"
    assert db_snapshot(pg_db) == before


def test_a_wrong_or_revoked_key_is_401(client: httpx.Client, keys: dict[str, str]) -> None:
    from shared.infra.db import session_scope
    from shared.intake.api_keys import revoke_api_key

    forged = keys["reader"][:-4] + "AAAA"
    assert client.get("/v1/payouts", headers=bearer(forged)).status_code == 401
    with session_scope() as session:
        revoke_api_key(session, "reader")
    assert client.get("/v1/payouts", headers=bearer(keys["reader"])).status_code == 401


def test_each_endpoint_needs_its_scope(
    client: httpx.Client, keys: dict[str, str], broker: redis.Redis, pg_db: str
) -> None:
    made = client.post(
        "/v1/payouts", json=BODY, headers=bearer(keys["creator"], **{"Idempotency-Key": "a"})
    )
    payout_id = made.json()["id"]
    before = db_snapshot(pg_db)

    refused = {
        "create with read key": client.post(
            "/v1/payouts", json=BODY, headers=bearer(keys["reader"], **{"Idempotency-Key": "b"})
        ),
        "read with sign key": client.get("/v1/payouts", headers=bearer(keys["signer"])),
        "approve with create key": client.post(
            f"/v1/payouts/{payout_id}/approve", headers=bearer(keys["creator"])
        ),
        "cancel with read key": client.post(
            f"/v1/payouts/{payout_id}/cancel", headers=bearer(keys["reader"])
        ),
    }

    assert {name: r.status_code for name, r in refused.items()} == dict.fromkeys(refused, 403)
    assert all(r.json()["error"]["code"] == "forbidden" for r in refused.values())
    assert db_snapshot(pg_db) == before
    # admin implies every scope
    assert client.get(f"/v1/payouts/{payout_id}", headers=bearer(keys["admin"])).status_code == 200
    assert (
        client.post(f"/v1/payouts/{payout_id}/approve", headers=bearer(keys["admin"])).status_code
        == 200
    )


def test_four_eyes_server_refuses_the_creator_and_accepts_another_key(
    four_eyes_server: ApiServer, keys: dict[str, str], broker: redis.Redis, pg_db: str
) -> None:
    with four_eyes_server.client() as client:
        made = client.post(
            "/v1/payouts", json=BODY, headers=bearer(keys["admin"], **{"Idempotency-Key": "k"})
        )
        payout_id = made.json()["id"]
        before = db_snapshot(pg_db)

        own = client.post(f"/v1/payouts/{payout_id}/approve", headers=bearer(keys["admin"]))

        assert own.status_code == 403
        assert own.json()["error"]["code"] == "four_eyes"
        assert db_snapshot(pg_db) == before

        other = client.post(f"/v1/payouts/{payout_id}/approve", headers=bearer(keys["approver"]))

        assert other.status_code == 200
        assert other.json()["approved_by"] == "approver"


def test_access_log_never_contains_the_api_key(
    api_server: ApiServer, client: httpx.Client, keys: dict[str, str]
) -> None:
    client.get("/v1/payouts", headers=bearer(keys["reader"]))
    client.get("/v1/payouts", headers=bearer(keys["reader"][:-2] + "xx"))

    log = api_server.log()
    assert "GET /v1/payouts" in log  # the access log is on...
    assert keys["reader"] not in log and keys["reader"][12:] not in log  # ...without secrets


def test_unauthenticated_bad_bodies_are_401_not_a_body_complaint(
    client: httpx.Client, keys: dict[str, str], pg_db: str
) -> None:
    # Malformed JSON, a form body and an oversized body: each would be 400/415/413 from a
    # caller with a key, but a caller without one learns nothing beyond 401.
    before = db_snapshot(pg_db)
    bodies = [
        (b'{"destination": ', "application/json"),
        (b"a=1", "application/x-www-form-urlencoded"),
        (b'{"pad": "' + b"x" * 20_000 + b'"}', "application/json"),
    ]
    for path in [
        "/v1/payouts",
        f"/v1/payouts/{SOME_ID}/cancel",
        f"/v1/payouts/{SOME_ID}/manual/submit",
    ]:
        for content, content_type in bodies:
            for auth in ({}, bearer(keys["reader"][:-4] + "AAAA")):
                response = client.post(
                    path,
                    content=content,
                    headers={"Content-Type": content_type, "Idempotency-Key": "k", **auth},
                )
                assert response.status_code == 401, (path, content[:20], response.text)
                assert response.headers["www-authenticate"] == "Bearer"
            wrong_scope = client.post(
                path,
                content=content,
                headers={"Content-Type": content_type, **bearer(keys["signer"])}
                if "manual" not in path
                else {"Content-Type": content_type, **bearer(keys["reader"])},
            )
            assert wrong_scope.status_code == 403, (path, content[:20], wrong_scope.text)
    assert db_snapshot(pg_db) == before
