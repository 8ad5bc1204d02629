"""Per-route request body limits: PAYOUTS_MAX_BODY_BYTES everywhere except manual/submit,
whose limit is derived from its schema so any signed transaction the schema allows fits."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel, ConfigDict, Field

from api.limits import JSON_OVERHEAD_BYTES, json_body_limit
from api.routes.manual import SUBMIT_MAX_BODY_BYTES, SubmitRequest
from tests.unit.api.conftest import bearer
from tests.unit.shared.factories import REGTEST_P2WPKH

PAYOUT = "00000000-0000-4000-8000-000000000000"
SUBMIT = f"/v1/payouts/{PAYOUT}/manual/submit"
# A signed transaction spending many small coins: far above the 4096-byte setting in conftest.
BIG_TX = {"tx_hex": "ab" * 75_000}


def post(
    client: TestClient, path: str, secret: str, content: bytes | Iterator[bytes]
) -> httpx.Response:
    headers = bearer(secret, **{"Content-Type": "application/json", "Idempotency-Key": "k"})
    return client.post(path, content=content, headers=headers)


def test_submit_takes_a_signed_transaction_far_above_the_general_limit(
    client: TestClient, keys: dict[str, str]
) -> None:
    response = post(client, SUBMIT, keys["signer"], json.dumps(BIG_TX).encode())

    # Unknown payout, no node: anything but a refusal of the body's size.
    assert response.status_code != 413, response.text


def test_the_same_body_to_create_is_413(client: TestClient, keys: dict[str, str]) -> None:
    body = {"destination": REGTEST_P2WPKH, "amount_sats": 1000, "metadata": BIG_TX}

    response = post(client, "/v1/payouts", keys["creator"], json.dumps(body).encode())

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "body_too_large"


def test_submit_fits_both_fields_at_their_schema_maximum(
    client: TestClient, keys: dict[str, str]
) -> None:
    widest = {
        name: "f" * field.metadata[0].max_length
        for name, field in SubmitRequest.model_fields.items()
    }
    body = json.dumps(widest, indent=4).encode()  # pretty-printed, too
    assert len(body) <= SUBMIT_MAX_BODY_BYTES

    assert post(client, SUBMIT, keys["signer"], body).status_code != 413


def test_submit_above_its_own_limit_is_413_declared_or_chunked(
    client: TestClient, keys: dict[str, str]
) -> None:
    body = json.dumps({"psbt": "x" * SUBMIT_MAX_BODY_BYTES}).encode()

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 65_536):
            yield body[start : start + 65_536]

    for content in (body, chunks()):
        response = post(client, SUBMIT, keys["signer"], content)
        assert response.status_code == 413
        assert str(SUBMIT_MAX_BODY_BYTES) in response.json()["error"]["message"]


def test_other_routes_keep_the_setting(client: TestClient, keys: dict[str, str]) -> None:
    body = json.dumps({"reason": "x" * 5_000}).encode()

    response = post(client, f"/v1/payouts/{PAYOUT}/cancel", keys["approver"], body)

    assert response.status_code == 413
    assert "4096" in response.json()["error"]["message"]


class TestJsonBodyLimit:
    def test_is_every_field_at_its_maximum_plus_the_json_around_it(self) -> None:
        class Pair(BaseModel):
            model_config = ConfigDict(extra="forbid")
            a: str | None = Field(default=None, max_length=10)
            bb: str = Field(max_length=5)

        widest = json.dumps({"a": "x" * 10, "bb": "y" * 5}, separators=(",", ":"))

        assert json_body_limit(Pair) == len(widest) + JSON_OVERHEAD_BYTES

    def test_refuses_a_schema_without_bounds(self) -> None:
        class Open(BaseModel):
            note: str

        with pytest.raises(TypeError, match="note"):
            json_body_limit(Open)
