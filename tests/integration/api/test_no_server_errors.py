"""Property: no request body a client can send to create or cancel produces a 5xx."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.api.conftest import bearer
from tests.unit.shared.factories import REGTEST_P2WPKH

pytestmark = pytest.mark.integration

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=20,
)
create_bodies = st.fixed_dictionaries(
    {},
    optional={
        "destination": st.just(REGTEST_P2WPKH) | st.text(max_size=95),
        "amount_sats": st.integers() | json_values,
        "metadata": json_values,
        "unexpected": json_values,
    },
)
# What HTTP lets through in a header value: visible ASCII, space, tab and obs-text (0x80+),
# sent as raw bytes. CR/LF and other controls are refused by the client library itself.
header_keys = st.text(
    alphabet=st.sampled_from([chr(c) for c in [9, *range(0x20, 0x7F), *range(0x80, 0x100)]]),
    max_size=40,
)


def test_no_body_yields_a_server_error(
    client: httpx.Client, keys: dict[str, str], pg_db: str
) -> None:
    @settings(
        max_examples=200, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(body=create_bodies, key=header_keys, reason=st.none() | st.text(max_size=40))
    def run(body: dict[str, Any], key: str, reason: str | None) -> None:
        headers = {
            b"Authorization": f"Bearer {keys['creator']}".encode(),
            b"Content-Type": b"application/json",
        }
        if key.strip():
            headers[b"Idempotency-Key"] = key.strip().encode("latin-1")
        made = client.post("/v1/payouts", content=json.dumps(body).encode(), headers=headers)
        assert made.status_code < 500, (body, key, made.text)
        if made.status_code in (200, 201):
            cancelled = client.post(
                f"/v1/payouts/{made.json()['id']}/cancel",
                json={"reason": reason},
                headers=bearer(keys["admin"]),
            )
            assert cancelled.status_code < 500, (reason, cancelled.text)

    run()
