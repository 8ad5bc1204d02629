"""Property: nothing a client can put in a create or cancel request produces a 5xx."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.api.conftest import bearer
from tests.unit.shared.factories import REGTEST_P2WPKH

pytestmark = pytest.mark.integration

PROPERTY_SETTINGS = settings(
    max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)

# st.floats() includes NaN and ±Infinity, which json.dumps writes and the server's parser
# accepts: exactly the values PostgreSQL's json type refuses.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=20,
)
arbitrary_bodies = st.fixed_dictionaries(
    {},
    optional={
        "destination": st.just(REGTEST_P2WPKH) | st.text(max_size=95),
        "amount_sats": st.integers() | json_values,
        "metadata": json_values,
        "unexpected": json_values,
    },
) | st.dictionaries(st.text(max_size=12), json_values, max_size=4)
# What HTTP lets through in a header value: visible ASCII, space, tab and obs-text (0x80+),
# sent as raw bytes. CR/LF and other controls are refused by the client library itself.
header_values = st.text(
    alphabet=st.sampled_from([chr(c) for c in [9, *range(0x20, 0x7F), *range(0x80, 0x100)]]),
    max_size=40,
)


def post_create(client: httpx.Client, secret: str, body: Any, key: bytes | None) -> httpx.Response:
    headers = {b"Authorization": f"Bearer {secret}".encode(), b"Content-Type": b"application/json"}
    if key is not None:
        headers[b"Idempotency-Key"] = key
    return client.post("/v1/payouts", content=json.dumps(body).encode(), headers=headers)


def test_valid_payouts_with_any_metadata_and_cancel_reason_never_5xx(
    client: httpx.Client, keys: dict[str, str], pg_db: str
) -> None:
    @PROPERTY_SETTINGS
    @given(
        amount=st.integers(546, 10_000_000),
        metadata=st.dictionaries(st.text(max_size=5), json_values, max_size=4),
        reason=st.none() | st.text(max_size=40),
    )
    def run(amount: int, metadata: dict[str, Any], reason: str | None) -> None:
        body = {"destination": REGTEST_P2WPKH, "amount_sats": amount, "metadata": metadata}
        # A fresh key per example: these requests are meant to reach the database.
        made = post_create(client, keys["creator"], body, uuid.uuid4().hex.encode())
        assert made.status_code in (201, 422), (body, made.text)
        if made.status_code == 201:
            assert made.json()["metadata"] == metadata
            cancelled = client.post(
                f"/v1/payouts/{made.json()['id']}/cancel",
                json={"reason": reason},
                headers=bearer(keys["admin"]),
            )
            assert cancelled.status_code in (200, 422), (reason, cancelled.text)

    run()


def test_arbitrary_bodies_and_idempotency_keys_never_5xx(
    client: httpx.Client, keys: dict[str, str], pg_db: str
) -> None:
    @PROPERTY_SETTINGS
    @given(body=arbitrary_bodies, key=st.none() | header_values)
    def run(body: dict[str, Any], key: str | None) -> None:
        encoded = key.strip().encode("latin-1") if key and key.strip() else None
        made = post_create(client, keys["creator"], body, encoded)
        assert made.status_code < 500, (body, key, made.text)

    run()
