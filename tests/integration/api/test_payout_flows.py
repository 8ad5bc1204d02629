"""The intake and approval flows over real HTTP against PostgreSQL and Redis."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import create_engine, text

from shared.sending.dispatch import PROCESS_PAYOUT_TASK
from tests.integration.api.conftest import ApiServer, bearer, db_snapshot, queued_messages
from tests.unit.shared.factories import REGTEST_P2WPKH, TESTNET_P2PKH

pytestmark = pytest.mark.integration

BODY = {"destination": REGTEST_P2WPKH, "amount_sats": 25_000, "metadata": {"invoice": "A-1"}}


def create(
    client: httpx.Client, secret: str, key: str, body: dict[str, Any] | None = None
) -> httpx.Response:
    return client.post(
        "/v1/payouts",
        json=BODY if body is None else body,
        headers=bearer(secret, **{"Idempotency-Key": key}),
    )


def approve(client: httpx.Client, secret: str, payout_id: str) -> httpx.Response:
    return client.post(f"/v1/payouts/{payout_id}/approve", headers=bearer(secret))


def force_state(db_url: str, payout_id: str, state: str, claimed_by: str) -> None:
    """Put a payout where a worker would have (claims are another component's job)."""
    engine = create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE payouts SET state = :s, claimed_by = :c WHERE id = :id"),
            {"s": state, "c": claimed_by, "id": uuid.UUID(payout_id)},
        )
    engine.dispose()


def test_create_replay_conflict_and_get(
    client: httpx.Client, keys: dict[str, str], pg_db: str
) -> None:
    first = create(client, keys["creator"], "order-1")
    assert first.status_code == 201, first.text
    payout = first.json()
    assert first.headers["location"] == f"/v1/payouts/{payout['id']}"
    assert (payout["state"], payout["created_by"], payout["metadata"]) == (
        "awaiting_approval",
        "creator",
        {"invoice": "A-1"},
    )

    replay = create(client, keys["creator"], "order-1")
    assert replay.status_code == 200
    assert replay.json()["id"] == payout["id"]

    conflict = create(client, keys["creator"], "order-1", {**BODY, "amount_sats": 25_001})
    assert conflict.status_code == 422
    assert conflict.json()["error"]["code"] == "idempotency_key_reused"

    got = client.get(f"/v1/payouts/{payout['id']}", headers=bearer(keys["reader"]))
    assert got.status_code == 200 and got.json() == payout
    rows = db_snapshot(pg_db)
    assert [len(rows[t]) for t in ("payouts", "payout_events", "idempotency_keys")] == [1, 1, 1]


def test_list_pages_and_filters(
    client: httpx.Client, keys: dict[str, str], broker: redis.Redis
) -> None:
    ids = [create(client, keys["creator"], f"k{i}").json()["id"] for i in range(5)]
    approve(client, keys["approver"], ids[1])
    approve(client, keys["approver"], ids[3])

    seen: list[str] = []
    params: dict[str, Any] = {"limit": 2}
    pages = 0
    while True:
        page = client.get("/v1/payouts", params=params, headers=bearer(keys["reader"])).json()
        pages += 1
        seen += [p["id"] for p in page["items"]]
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]
    assert (seen, pages) == (ids, 3)

    approved = client.get(
        "/v1/payouts", params={"state": "approved"}, headers=bearer(keys["reader"])
    ).json()
    assert [p["id"] for p in approved["items"]] == [ids[1], ids[3]]


def test_events_record_each_transition_with_its_actor(
    client: httpx.Client, keys: dict[str, str], broker: redis.Redis
) -> None:
    payout_id = create(client, keys["creator"], "k").json()["id"]
    approve(client, keys["approver"], payout_id)
    client.post(
        f"/v1/payouts/{payout_id}/cancel",
        json={"reason": "duplicate invoice"},
        headers=bearer(keys["approver2"]),
    )

    events = client.get(f"/v1/payouts/{payout_id}/events", headers=bearer(keys["reader"])).json()

    assert [(e["from_state"], e["to_state"], e["actor"]) for e in events["items"]] == [
        (None, "awaiting_approval", "creator"),
        ("awaiting_approval", "approved", "approver"),
        ("approved", "cancelled", "approver2"),
    ]
    assert events["items"][-1]["reason"] == "duplicate invoice"


def test_automatic_approval_lands_a_process_payout_message_in_redis(
    client: httpx.Client, keys: dict[str, str], broker: redis.Redis
) -> None:
    payout_id = create(client, keys["creator"], "k").json()["id"]

    response = approve(client, keys["approver"], payout_id)

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["state"], body["route"], body["processing"]) == (
        "approved",
        "automatic",
        "automatic",
    )
    assert "claim_url" not in body
    [message] = queued_messages(broker)
    assert message["headers"]["task"] == PROCESS_PAYOUT_TASK
    assert payout_id in message["headers"]["argsrepr"]
    args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
    assert args == [payout_id]


def test_broker_down_still_approves_and_answers_200(
    broker_down_server: ApiServer, keys: dict[str, str], pg_db: str
) -> None:
    with broker_down_server.client() as client:
        payout_id = create(client, keys["creator"], "k").json()["id"]

        response = approve(client, keys["approver"], payout_id)

        assert response.status_code == 200, response.text
        assert response.json()["processing"] == "automatic"
        got = client.get(f"/v1/payouts/{payout_id}", headers=bearer(keys["reader"])).json()
    assert got["state"] == "approved"  # committed; the sweeper will publish it later
    assert f"approved payout {payout_id} but could not publish" in broker_down_server.log()


def test_manual_approval_returns_the_claim_url_and_publishes_nothing(
    client: httpx.Client, keys: dict[str, str], broker: redis.Redis
) -> None:
    payout_id = create(client, keys["creator"], "k", {**BODY, "amount_sats": 2_000_000}).json()[
        "id"
    ]

    body = approve(client, keys["approver"], payout_id).json()

    assert (body["route"], body["processing"]) == ("manual", "manual")
    assert body["claim_url"] == f"/v1/payouts/{payout_id}/manual/claim"
    assert queued_messages(broker) == []


def test_daily_automatic_budget_sends_the_overflow_manual(
    client: httpx.Client, keys: dict[str, str], broker: redis.Redis
) -> None:
    # Budget 3_000_000/24h, so the fourth 1_000_000 approval must go to a human.
    ids = [
        create(client, keys["creator"], f"k{i}", {**BODY, "amount_sats": 1_000_000}).json()["id"]
        for i in range(4)
    ]

    routes = [approve(client, keys["approver"], i).json()["route"] for i in ids]

    assert routes == ["automatic", "automatic", "automatic", "manual"]
    # One wake-up for the batch run that will pay all three (no run has claimed yet).
    assert len(queued_messages(broker)) == 1


def test_approving_twice_is_409_and_publishes_once(
    client: httpx.Client, keys: dict[str, str], broker: redis.Redis
) -> None:
    payout_id = create(client, keys["creator"], "k").json()["id"]
    approve(client, keys["approver"], payout_id)

    again = approve(client, keys["approver2"], payout_id)

    assert again.status_code == 409
    assert again.json()["error"]["code"] == "invalid_state"
    assert "'approved'" in again.json()["error"]["message"]
    assert len(queued_messages(broker)) == 1


@pytest.mark.parametrize("approve_first", [False, True])
def test_cancel_before_any_claim(
    client: httpx.Client, keys: dict[str, str], broker: redis.Redis, approve_first: bool
) -> None:
    payout_id = create(client, keys["creator"], "k").json()["id"]
    if approve_first:
        approve(client, keys["approver"], payout_id)

    response = client.post(f"/v1/payouts/{payout_id}/cancel", headers=bearer(keys["approver"]))

    assert response.status_code == 200
    assert response.json()["state"] == "cancelled"


def test_cancel_after_a_claim_is_409_naming_the_holder(
    client: httpx.Client, keys: dict[str, str], broker: redis.Redis, pg_db: str
) -> None:
    payout_id = create(client, keys["creator"], "k").json()["id"]
    approve(client, keys["approver"], payout_id)
    force_state(pg_db, payout_id, "claimed", "worker:w1@host")
    before = db_snapshot(pg_db)

    response = client.post(f"/v1/payouts/{payout_id}/cancel", headers=bearer(keys["approver"]))

    assert response.status_code == 409
    message = response.json()["error"]["message"]
    assert "'claimed'" in message and "worker:w1@host" in message
    assert db_snapshot(pg_db) == before


def test_base58_testnet_address_is_accepted_on_regtest(
    client: httpx.Client, keys: dict[str, str]
) -> None:
    response = create(client, keys["creator"], "k", {**BODY, "destination": TESTNET_P2PKH})

    assert response.status_code == 201
