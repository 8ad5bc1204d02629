"""Payout routes through HTTP (TestClient on SQLite): create/replay/conflict, read, list,
events, approve (route + publish after commit), cancel."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from shared.core.models import Payout, PayoutState, Transaction
from shared.infra.db import get_sessionmaker
from tests.unit.api.conftest import RecordingPublisher, bearer
from tests.unit.shared.factories import REGTEST_P2WPKH, REGTEST_P2WSH, row_counts

BODY = {"destination": REGTEST_P2WPKH, "amount_sats": 10_000, "metadata": {"order": 7}}


def create(
    client: TestClient, secret: str, key: str = "k1", body: dict[str, Any] | None = None
) -> Any:
    return client.post(
        "/v1/payouts",
        json=BODY if body is None else body,
        headers=bearer(secret, **{"Idempotency-Key": key}),
    )


def counts() -> dict[str, int]:
    with get_sessionmaker()() as session:
        return row_counts(session)


def set_state(payout_id: str, state: PayoutState, **values: Any) -> None:
    with get_sessionmaker()() as session:
        session.execute(
            update(Payout).where(Payout.id == uuid.UUID(payout_id)).values(state=state, **values)
        )
        session.commit()


class TestCreate:
    def test_new_payout_is_201_with_location_and_full_json(
        self, client: TestClient, keys: dict[str, str]
    ) -> None:
        response = create(client, keys["creator"])

        assert response.status_code == 201
        body = response.json()
        assert response.headers["location"] == f"/v1/payouts/{body['id']}"
        assert body["state"] == "awaiting_approval"
        assert (body["destination"], body["amount_sats"], body["metadata"]) == (
            REGTEST_P2WPKH,
            10_000,
            {"order": 7},
        )
        assert body["created_by"] == "creator"
        assert set(body) == {
            "id", "destination", "amount_sats", "state", "route", "created_by", "approved_by",
            "approved_at", "claimed_by", "lease_until", "attempts", "txid", "transaction_versions",
            "vout", "fee_share_sats", "last_error", "metadata", "created_at", "updated_at",
        }  # fmt: skip

    def test_replay_is_200_with_the_same_payout(
        self, client: TestClient, keys: dict[str, str]
    ) -> None:
        first = create(client, keys["creator"]).json()

        again = create(client, keys["creator"])

        assert again.status_code == 200
        assert again.json()["id"] == first["id"]
        assert again.headers["idempotent-replayed"] == "true"
        assert counts()["payouts"] == 1

    def test_same_key_with_another_body_is_422_and_changes_nothing(
        self, client: TestClient, keys: dict[str, str]
    ) -> None:
        create(client, keys["creator"])
        before = counts()

        response = create(client, keys["creator"], body={**BODY, "amount_sats": 10_001})

        assert response.status_code == 422
        assert response.json()["error"]["code"] == "idempotency_key_reused"
        assert counts() == before

    def test_missing_idempotency_key_is_400(self, client: TestClient, keys: dict[str, str]) -> None:
        response = client.post("/v1/payouts", json=BODY, headers=bearer(keys["creator"]))

        assert response.status_code == 400
        assert response.json()["error"]["code"] == "idempotency_key_required"
        assert counts()["payouts"] == 0

    @pytest.mark.parametrize(
        ("body", "fragment"),
        [
            ({**BODY, "amount_sats": 0}, "positive"),
            ({**BODY, "amount_sats": -5}, "positive"),
            ({**BODY, "amount_sats": 545}, "dust"),
            ({**BODY, "amount_sats": 50_000_001}, "maximum"),
            ({**BODY, "amount_sats": 1.5}, "amount_sats"),
            ({**BODY, "amount_sats": "1000"}, "amount_sats"),
            ({**BODY, "amount_sats": True}, "amount_sats"),
            ({**BODY, "amount_sats": None}, "amount_sats"),
            ({**BODY, "destination": "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"}, "mainnet"),
            ({**BODY, "destination": "tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx"}, "testnet"),
            ({**BODY, "destination": REGTEST_P2WPKH[:-1] + "1"}, "not a valid"),
            ({**BODY, "destination": 42}, "destination"),
            ({**BODY, "metadata": [1]}, "metadata"),
            ({**BODY, "fee": 1}, "fee: unknown field"),
            ({"amount_sats": 1000}, "destination"),
            ({"destination": REGTEST_P2WPKH}, "amount_sats"),
        ],
    )
    def test_bad_body_is_422_naming_the_problem_and_changes_nothing(
        self, client: TestClient, keys: dict[str, str], body: dict[str, Any], fragment: str
    ) -> None:
        response = create(client, keys["creator"], body=body)

        assert response.status_code == 422
        error = response.json()["error"]
        assert error["code"] == "invalid_request"
        assert fragment in error["message"]
        assert counts() == {"payouts": 0, "payout_events": 0, "idempotency_keys": 0}

    def test_overlong_idempotency_key_is_422(
        self, client: TestClient, keys: dict[str, str]
    ) -> None:
        response = create(client, keys["creator"], key="k" * 256)

        assert response.status_code == 422
        assert "Idempotency-Key" in response.json()["error"]["message"]


class TestRead:
    def test_get_returns_the_payout(self, client: TestClient, keys: dict[str, str]) -> None:
        created = create(client, keys["creator"]).json()

        response = client.get(f"/v1/payouts/{created['id']}", headers=bearer(keys["reader"]))

        assert response.status_code == 200
        assert response.json() == created

    def test_get_shows_the_txid_of_the_linked_transaction(
        self, client: TestClient, keys: dict[str, str]
    ) -> None:
        created = create(client, keys["creator"]).json()
        with get_sessionmaker()() as session:
            tx = Transaction(txid="cd" * 32, raw_hex="00", fee_sats=150, inputs=[])
            session.add(tx)
            session.commit()
            tx_id = tx.id
        set_state(created["id"], PayoutState.SIGNED, tx_id=tx_id)

        body = client.get(f"/v1/payouts/{created['id']}", headers=bearer(keys["reader"])).json()

        assert body["txid"] == "cd" * 32

    def test_unknown_id_is_404(self, client: TestClient, keys: dict[str, str]) -> None:
        response = client.get(f"/v1/payouts/{uuid.uuid4()}", headers=bearer(keys["reader"]))

        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"

    def test_malformed_id_is_422(self, client: TestClient, keys: dict[str, str]) -> None:
        response = client.get("/v1/payouts/not-a-uuid", headers=bearer(keys["reader"]))

        assert response.status_code == 422
        assert "payout_id" in response.json()["error"]["message"]

    def test_list_pages_through_everything_in_creation_order(
        self, client: TestClient, keys: dict[str, str]
    ) -> None:
        ids = [create(client, keys["creator"], key=f"k{i}").json()["id"] for i in range(5)]

        seen: list[str] = []
        params: dict[str, Any] = {"limit": 2}
        while True:
            page = client.get("/v1/payouts", params=params, headers=bearer(keys["reader"])).json()
            seen += [item["id"] for item in page["items"]]
            if page["next_cursor"] is None:
                break
            params["cursor"] = page["next_cursor"]

        assert seen == ids

    def test_list_filters_by_state(self, client: TestClient, keys: dict[str, str]) -> None:
        first = create(client, keys["creator"], key="a").json()
        create(client, keys["creator"], key="b")
        client.post(f"/v1/payouts/{first['id']}/approve", headers=bearer(keys["approver"]))

        page = client.get(
            "/v1/payouts", params={"state": "approved"}, headers=bearer(keys["reader"])
        ).json()

        assert [item["id"] for item in page["items"]] == [first["id"]]

    @pytest.mark.parametrize(
        "params", [{"state": "paid"}, {"limit": 0}, {"limit": 201}, {"cursor": "nonsense"}]
    )
    def test_list_with_bad_query_is_422(
        self, client: TestClient, keys: dict[str, str], params: dict[str, Any]
    ) -> None:
        response = client.get("/v1/payouts", params=params, headers=bearer(keys["reader"]))

        assert response.status_code == 422
        assert response.json()["error"]["code"] == "invalid_request"

    def test_events_list_the_audit_trail(self, client: TestClient, keys: dict[str, str]) -> None:
        payout = create(client, keys["creator"]).json()
        client.post(f"/v1/payouts/{payout['id']}/approve", headers=bearer(keys["approver"]))

        response = client.get(f"/v1/payouts/{payout['id']}/events", headers=bearer(keys["reader"]))

        assert response.status_code == 200
        items = response.json()["items"]
        assert [(e["from_state"], e["to_state"], e["actor"]) for e in items] == [
            (None, "awaiting_approval", "creator"),
            ("awaiting_approval", "approved", "approver"),
        ]

    def test_events_of_unknown_payout_is_404(
        self, client: TestClient, keys: dict[str, str]
    ) -> None:
        response = client.get(f"/v1/payouts/{uuid.uuid4()}/events", headers=bearer(keys["reader"]))

        assert response.status_code == 404


class TestApprove:
    def test_automatic_route_publishes_after_commit_and_has_no_claim_url(
        self,
        client: TestClient,
        keys: dict[str, str],
        publisher: RecordingPublisher,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        payout = create(client, keys["creator"]).json()
        seen_state_at_publish: list[str] = []

        def check_committed(payout_id: uuid.UUID | str) -> None:
            # A fresh session sees only committed data: the approval must already be there.
            with get_sessionmaker()() as other:
                row = other.get(Payout, uuid.UUID(str(payout_id)))
                seen_state_at_publish.append(row.state if row else "missing")
            publisher.published.append(str(payout_id))

        monkeypatch.setattr("shared.sending.dispatch.enqueue_process_payout", check_committed)

        response = client.post(
            f"/v1/payouts/{payout['id']}/approve", headers=bearer(keys["approver"])
        )

        assert response.status_code == 200
        body = response.json()
        assert (body["state"], body["route"], body["processing"]) == (
            "approved",
            "automatic",
            "automatic",
        )
        assert "claim_url" not in body
        assert body["approved_by"] == "approver" and body["approved_at"]
        assert publisher.published == [payout["id"]]
        assert seen_state_at_publish == ["approved"]

    def test_manual_route_returns_claim_url_and_publishes_nothing(
        self, client: TestClient, keys: dict[str, str], publisher: RecordingPublisher
    ) -> None:
        payout = create(client, keys["creator"], body={**BODY, "amount_sats": 2_000_000}).json()

        response = client.post(
            f"/v1/payouts/{payout['id']}/approve", headers=bearer(keys["approver"])
        )

        body = response.json()
        assert (body["route"], body["processing"]) == ("manual", "manual")
        assert body["claim_url"] == f"/v1/payouts/{payout['id']}/manual/claim"
        assert publisher.published == []

    def test_broker_down_still_answers_200_and_keeps_the_approval(
        self,
        client: TestClient,
        keys: dict[str, str],
        publisher: RecordingPublisher,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        payout = create(client, keys["creator"]).json()
        publisher.fail_with = ConnectionError("broker unreachable")

        with caplog.at_level(logging.WARNING):
            response = client.post(
                f"/v1/payouts/{payout['id']}/approve", headers=bearer(keys["approver"])
            )

        assert response.status_code == 200
        assert response.json()["processing"] == "automatic"
        got = client.get(f"/v1/payouts/{payout['id']}", headers=bearer(keys["reader"])).json()
        assert got["state"] == "approved"
        assert any("could not publish" in r.getMessage() for r in caplog.records)

    def test_approving_twice_is_409_with_the_current_state(
        self, client: TestClient, keys: dict[str, str], publisher: RecordingPublisher
    ) -> None:
        payout = create(client, keys["creator"]).json()
        client.post(f"/v1/payouts/{payout['id']}/approve", headers=bearer(keys["approver"]))

        again = client.post(f"/v1/payouts/{payout['id']}/approve", headers=bearer(keys["admin"]))

        assert again.status_code == 409
        error = again.json()["error"]
        assert error["code"] == "invalid_state" and "'approved'" in error["message"]
        assert len(publisher.published) == 1

    def test_unknown_payout_is_404(self, client: TestClient, keys: dict[str, str]) -> None:
        response = client.post(f"/v1/payouts/{uuid.uuid4()}/approve", headers=bearer(keys["admin"]))

        assert response.status_code == 404

    def test_four_eyes_refuses_the_creating_key(
        self, client: TestClient, keys: dict[str, str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("PAYOUTS_FOUR_EYES", "true")
        from shared.infra.settings import reset_settings_cache

        reset_settings_cache()  # settings are read per request; make it see the new env
        payout = create(client, keys["admin"]).json()

        refused = client.post(f"/v1/payouts/{payout['id']}/approve", headers=bearer(keys["admin"]))
        allowed = client.post(
            f"/v1/payouts/{payout['id']}/approve", headers=bearer(keys["approver"])
        )

        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "four_eyes"
        assert allowed.status_code == 200


class TestCancel:
    @pytest.mark.parametrize("approve_first", [False, True])
    def test_cancel_before_any_claim_succeeds_and_records_the_reason(
        self, client: TestClient, keys: dict[str, str], approve_first: bool
    ) -> None:
        payout = create(client, keys["creator"]).json()
        if approve_first:
            client.post(f"/v1/payouts/{payout['id']}/approve", headers=bearer(keys["approver"]))

        response = client.post(
            f"/v1/payouts/{payout['id']}/cancel",
            json={"reason": "customer asked"},
            headers=bearer(keys["approver"]),
        )

        assert response.status_code == 200
        assert response.json()["state"] == "cancelled"
        events = client.get(
            f"/v1/payouts/{payout['id']}/events", headers=bearer(keys["reader"])
        ).json()["items"]
        assert events[-1]["reason"] == "customer asked"

    def test_cancel_without_a_body_works(self, client: TestClient, keys: dict[str, str]) -> None:
        payout = create(client, keys["creator"]).json()

        response = client.post(f"/v1/payouts/{payout['id']}/cancel", headers=bearer(keys["admin"]))

        assert response.status_code == 200

    @pytest.mark.parametrize("state", [PayoutState.CLAIMED, PayoutState.SIGNED])
    def test_cancel_after_a_claim_is_409_and_changes_nothing(
        self, client: TestClient, keys: dict[str, str], state: PayoutState
    ) -> None:
        payout = create(client, keys["creator"]).json()
        set_state(payout["id"], state, claimed_by="worker:w1")
        before = counts()

        response = client.post(f"/v1/payouts/{payout['id']}/cancel", headers=bearer(keys["admin"]))

        assert response.status_code == 409
        error = response.json()["error"]
        assert error["code"] == "invalid_state"
        assert state.value in error["message"] and "worker:w1" in error["message"]
        assert counts() == before

    def test_cancel_reason_with_a_nul_byte_is_422_not_a_database_error(
        self, client: TestClient, keys: dict[str, str]
    ) -> None:
        payout = create(client, keys["creator"]).json()

        response = client.post(
            f"/v1/payouts/{payout['id']}/cancel",
            json={"reason": "a\u0000b"},
            headers=bearer(keys["admin"]),
        )

        assert response.status_code == 422
        assert "reason" in response.json()["error"]["message"]

    def test_cancel_with_an_unknown_field_is_422(
        self, client: TestClient, keys: dict[str, str]
    ) -> None:
        payout = create(client, keys["creator"]).json()

        response = client.post(
            f"/v1/payouts/{payout['id']}/cancel", json={"why": "x"}, headers=bearer(keys["admin"])
        )

        assert response.status_code == 422
        got = client.get(f"/v1/payouts/{payout['id']}", headers=bearer(keys["reader"])).json()
        assert got["state"] == "awaiting_approval"


def test_other_creators_key_does_not_replay_mine(client: TestClient, keys: dict[str, str]) -> None:
    mine = create(client, keys["creator"], key="shared-key").json()

    theirs = create(
        client, keys["creator2"], key="shared-key", body={**BODY, "destination": REGTEST_P2WSH}
    )

    assert theirs.status_code == 201 and theirs.json()["id"] != mine["id"]
