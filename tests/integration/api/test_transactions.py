"""GET /v1/transactions and /v1/transactions/{txid} over real HTTP against the `payouts api`
subprocess on PostgreSQL: a batch of three payouts, paging, the refusals, and the
transaction-size histograms on /metrics. The rows are written straight into the database
(building and signing batches is the workers' job, tested in tests/integration/pipeline)."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from datetime import datetime, timedelta

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from shared.core.claims import link_payouts
from shared.core.models import (
    Payout,
    PayoutState,
    Transaction,
    TxState,
    utcnow,
)
from shared.infra.db import session_scope
from tests.integration.api.conftest import bearer
from tests.unit.api.test_transaction_vsize import segwit_hex
from tests.unit.shared.factories import make_payout

pytestmark = pytest.mark.integration

TXID = "5e" * 32


def add_transaction(
    txid: str,
    pays: Sequence[tuple[int | None, int, int | None]],
    *,
    vsize: int | None = 300,
    raw_hex: str = "00",
    fee_sats: int = 1_000,
    state: TxState = TxState.BROADCAST,
    created_at: datetime | None = None,
) -> list[str]:
    """A transaction row paying payouts given as (vout, amount_sats, fee_share_sats); returns
    the payout ids in that order."""
    with session_scope() as session:
        tx = Transaction(
            txid=txid, raw_hex=raw_hex, fee_sats=fee_sats, vsize=vsize, inputs=[], state=state,
            confirmations=0, created_at=created_at or utcnow(),
        )  # fmt: skip
        session.add(tx)
        session.commit()
        payouts = [
            make_payout(
                session, state=PayoutState.BROADCAST, amount_sats=amount, tx_id=tx.id,
                vout=vout, fee_share_sats=share,
            )
            for vout, amount, share in pays
        ]  # fmt: skip
        # As claims.persist_signed records it: which payouts the transaction pays, by vout.
        vouts = {p.id: p.vout for p in payouts if p.vout is not None}
        shares = {p.id: p.fee_share_sats for p in payouts if p.fee_share_sats is not None}
        link_payouts(session, tx.id, [p.id for p in payouts], vouts, shares)
        session.commit()
        return [str(p.id) for p in payouts]


@pytest.fixture
def batch(keys: dict[str, str]) -> list[str]:
    return add_transaction(TXID, [(1, 20_000, 333), (2, 30_000, 333), (0, 10_000, 334)])


def row_counts() -> tuple[int, int]:
    with session_scope() as session:
        return (
            int(session.scalar(select(func.count()).select_from(Transaction)) or 0),
            int(session.scalar(select(func.count()).select_from(Payout)) or 0),
        )


def test_a_batch_and_its_payouts_read_back_on_postgresql(
    client: httpx.Client, keys: dict[str, str], batch: list[str]
) -> None:
    got = client.get(f"/v1/transactions/{TXID.upper()}", headers=bearer(keys["reader"]))

    assert got.status_code == 200, got.text
    assert got.json() == {
        "txid": TXID,
        "state": "broadcast",
        "fee_sats": 1_000,
        "vsize": 300,
        "fee_rate_sat_vb": 3.33,
        "confirmations": 0,
        "payouts": [
            {"id": batch[2], "vout": 0, "amount_sats": 10_000, "fee_share_sats": 334},
            {"id": batch[0], "vout": 1, "amount_sats": 20_000, "fee_share_sats": 333},
            {"id": batch[1], "vout": 2, "amount_sats": 30_000, "fee_share_sats": 333},
        ],
        "replaces": None,
        "replaced_by": None,
        "versions": [TXID],
    }
    views = [
        client.get(f"/v1/payouts/{pid}", headers=bearer(keys["reader"])).json() for pid in batch
    ]
    assert [(v["txid"], v["vout"], v["fee_share_sats"]) for v in views] == [
        (TXID, 1, 333),
        (TXID, 2, 333),
        (TXID, 0, 334),
    ]


def test_a_row_from_before_batching_gets_its_vsize_from_its_bytes(
    client: httpx.Client, keys: dict[str, str]
) -> None:
    add_transaction(TXID, [(None, 10_000, None)], vsize=None, raw_hex=segwit_hex(), fee_sats=705)

    body = client.get(f"/v1/transactions/{TXID}", headers=bearer(keys["reader"])).json()

    assert (body["vsize"], body["fee_rate_sat_vb"]) == (141, 5.0)
    assert [p["vout"] for p in body["payouts"]] == [None]


def test_the_list_pages_oldest_first_and_filters_by_state(
    client: httpx.Client, keys: dict[str, str]
) -> None:
    start = utcnow() - timedelta(hours=1)
    txids = [f"{i:02x}" * 32 for i in range(5)]
    for i in (2, 4, 0, 3, 1):
        state = TxState.CONFIRMED if i % 2 else TxState.BROADCAST
        add_transaction(
            txids[i], [(0, 1_000, 5)] * (i + 1), state=state,
            created_at=start + timedelta(seconds=i),
        )  # fmt: skip

    seen, cursor = [], None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get("/v1/transactions", params=params, headers=bearer(keys["reader"]))
        assert page.status_code == 200, page.text
        seen += page.json()["items"]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    confirmed = client.get(
        "/v1/transactions", params={"state": "confirmed"}, headers=bearer(keys["reader"])
    ).json()

    assert [item["txid"] for item in seen] == txids
    assert [item["payout_count"] for item in seen] == [1, 2, 3, 4, 5]
    assert [item["txid"] for item in confirmed["items"]] == [txids[1], txids[3]]


@pytest.mark.parametrize(
    ("path", "params", "status"),
    [
        (f"/v1/transactions/{'ab' * 32}", {}, 404),
        ("/v1/transactions/" + "ab" * 31, {}, 422),
        ("/v1/transactions/" + "ab" * 33, {}, 422),
        ("/v1/transactions/" + "zz" * 32, {}, 422),
        ("/v1/transactions/" + TXID + "%0A", {}, 422),
        ("/v1/transactions/" + ("';DROP TABLE transactions;--" + "a" * 64)[:64], {}, 422),
        ("/v1/transactions/%27%20OR%20%271%27%3D%271", {}, 422),
        ("/v1/transactions", {"cursor": "nonsense"}, 422),
        ("/v1/transactions", {"cursor": base64.b64encode(b"x|' OR 1=1 --").decode()}, 422),
        ("/v1/transactions", {"state": "broadcast' OR '1'='1"}, 422),
        ("/v1/transactions", {"limit": 10_000}, 422),
    ],
)
def test_refusals_use_the_uniform_error_body_and_change_nothing(
    client: httpx.Client,
    keys: dict[str, str],
    batch: list[str],
    path: str,
    params: dict[str, object],
    status: int,
) -> None:
    before = row_counts()

    response = client.get(path, params=params, headers=bearer(keys["reader"]))

    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] == ("not_found" if status == 404 else "invalid_request")
    assert row_counts() == before


def test_a_tampered_cursor_is_422(
    client: httpx.Client, keys: dict[str, str], batch: list[str]
) -> None:
    for i in range(3):
        add_transaction(f"{i:02x}" * 32, [(0, 1_000, 1)])
    cursor = client.get(
        "/v1/transactions", params={"limit": 1}, headers=bearer(keys["reader"])
    ).json()["next_cursor"]
    raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    tampered = base64.urlsafe_b64encode(raw[:-1] + b"g").decode()  # the uuid's last digit

    response = client.get(
        "/v1/transactions", params={"cursor": tampered}, headers=bearer(keys["reader"])
    )

    assert response.status_code == 422
    assert "cursor" in response.json()["error"]["message"]


@pytest.mark.parametrize("path", ["/v1/transactions", f"/v1/transactions/{TXID}"])
def test_no_key_is_401_and_a_key_without_payouts_read_is_403(
    client: httpx.Client, keys: dict[str, str], batch: list[str], path: str
) -> None:
    anonymous = client.get(path)
    signer = client.get(path, headers=bearer(keys["signer"]))  # payouts:sign only

    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"] == "Bearer"
    assert signer.status_code == 403
    assert signer.json()["error"]["code"] == "forbidden"


def test_metrics_show_the_last_days_batch_sizes_and_vbytes_per_payout(
    client: httpx.Client, keys: dict[str, str]
) -> None:
    add_transaction("01" * 32, [(i, 1_000, 1) for i in range(3)], vsize=300)
    add_transaction("02" * 32, [(0, 1_000, 1)], vsize=141)
    add_transaction(
        "03" * 32, [(0, 1_000, 1)] * 8, vsize=999, created_at=utcnow() - timedelta(days=2)
    )

    text = client.get("/metrics").text

    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("payouts_batch_size_count", ())] == 2
    assert samples[("payouts_batch_size_sum", ())] == 4
    assert samples[("payouts_batch_size_bucket", (("le", "1.0"),))] == 1
    assert samples[("payouts_tx_vbytes_per_payout_count", ())] == 2
    assert samples[("payouts_tx_vbytes_per_payout_sum", ())] == pytest.approx(241)
    assert samples[("payouts_tx_vbytes_per_payout_bucket", (("le", "100.0"),))] == 1
