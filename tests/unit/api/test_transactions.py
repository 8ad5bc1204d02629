"""Transaction routes through HTTP (TestClient on SQLite): one transaction paying three
payouts, the payout view's txid/vout/fee share, paging like the payouts list, and the
refusals (404 unknown txid, 422 anything that is not 64 hex digits, tampered cursors)."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from shared.core.claims import link_payouts
from shared.core.models import Payout, PayoutState, Transaction, TxState
from shared.infra.db import get_sessionmaker
from tests.unit.api.conftest import bearer
from tests.unit.shared.factories import make_payout

TXID = "9f" * 32
T0 = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)
# A 1-input, 2-output P2WPKH transaction (72-byte signature): 223 bytes, weight 562, 141 vB.
SEGWIT_HEX = (
    "02000000" "0001" "01" + "11" * 32 + "00000000" "00" "fdffffff"
    "02" + ("e803000000000000" "16" "0014" + "22" * 20) * 2
    + "02" "48" + "30" * 72 + "21" + "02" * 33 + "00000000"
)  # fmt: skip


def add_transaction(
    txid: str = TXID,
    *,
    fee_sats: int = 1_001,
    vsize: int | None = 200,
    raw_hex: str = "00",
    state: TxState = TxState.BROADCAST,
    confirmations: int = 0,
    created_at: datetime = T0,
    pays: Sequence[tuple[int | None, int, int | None]] = (),
) -> tuple[uuid.UUID, list[str]]:
    """A transactions row and the payouts it pays, each (vout, amount_sats, fee_share_sats);
    returns the row's id and the payout ids in the order given."""
    with get_sessionmaker()() as session:
        tx = Transaction(
            txid=txid, raw_hex=raw_hex, fee_sats=fee_sats, vsize=vsize, inputs=[],
            state=state, confirmations=confirmations, created_at=created_at,
        )  # fmt: skip
        session.add(tx)
        session.commit()
        payouts = [
            make_payout(
                session,
                state=PayoutState.BROADCAST,
                amount_sats=amount,
                tx_id=tx.id,
                vout=vout,
                fee_share_sats=share,
            )
            for vout, amount, share in pays
        ]
        # As claims.persist_signed records it: which payouts the transaction pays, by vout.
        vouts = {p.id: p.vout for p in payouts if p.vout is not None}
        shares = {p.id: p.fee_share_sats for p in payouts if p.fee_share_sats is not None}
        link_payouts(session, tx.id, [p.id for p in payouts], vouts, shares)
        session.commit()
        return tx.id, [str(p.id) for p in payouts]


@pytest.fixture
def batch(app_db: str) -> list[str]:
    """TXID pays three payouts; given out of vout order, with shares adding up to the fee."""
    _, ids = add_transaction(pays=[(2, 30_000, 333), (0, 10_000, 334), (1, 20_000, 334)])
    return ids


def get(client: TestClient, path: str, secret: str, **params: Any) -> Any:
    return client.get(path, params=params, headers=bearer(secret))


class TestGetTransaction:
    def test_the_transaction_with_its_payouts_by_vout(
        self, client: TestClient, keys: dict[str, str], batch: list[str]
    ) -> None:
        response = get(client, f"/v1/transactions/{TXID}", keys["reader"])

        assert response.status_code == 200
        assert response.json() == {
            "txid": TXID,
            "state": "broadcast",
            "fee_sats": 1_001,
            "vsize": 200,
            "fee_rate_sat_vb": 5.0,
            "confirmations": 0,
            "payouts": [
                {"id": batch[1], "vout": 0, "amount_sats": 10_000, "fee_share_sats": 334},
                {"id": batch[2], "vout": 1, "amount_sats": 20_000, "fee_share_sats": 334},
                {"id": batch[0], "vout": 2, "amount_sats": 30_000, "fee_share_sats": 333},
            ],
            "replaces": None,
            "replaced_by": None,
            "versions": [TXID],
        }

    def test_each_payout_view_names_its_transaction_output_and_fee_share(
        self, client: TestClient, keys: dict[str, str], batch: list[str]
    ) -> None:
        views = [get(client, f"/v1/payouts/{pid}", keys["reader"]).json() for pid in batch]
        listed = {p["id"]: p for p in get(client, "/v1/payouts", keys["reader"]).json()["items"]}

        assert [(v["txid"], v["vout"], v["fee_share_sats"]) for v in views] == [
            (TXID, 2, 333),
            (TXID, 0, 334),
            (TXID, 1, 334),
        ]
        assert all(listed[v["id"]] == v for v in views)  # the list shows the same view

    def test_a_payout_not_yet_signed_has_no_txid_vout_or_share(
        self, client: TestClient, keys: dict[str, str]
    ) -> None:
        with get_sessionmaker()() as session:
            payout = make_payout(session, state=PayoutState.APPROVED)

        view = get(client, f"/v1/payouts/{payout.id}", keys["reader"]).json()

        assert (view["txid"], view["vout"], view["fee_share_sats"]) == (None, None, None)

    def test_fee_rate_is_rounded_to_two_decimals(
        self, client: TestClient, keys: dict[str, str], app_db: str
    ) -> None:
        add_transaction(fee_sats=1_000, vsize=141)

        body = get(client, f"/v1/transactions/{TXID}", keys["reader"]).json()

        assert body["fee_rate_sat_vb"] == 7.09  # 1000 / 141 = 7.0921...

    def test_an_uppercase_txid_finds_the_same_transaction(
        self, client: TestClient, keys: dict[str, str], batch: list[str]
    ) -> None:
        response = get(client, f"/v1/transactions/{TXID.upper()}", keys["reader"])

        assert response.status_code == 200
        assert response.json()["txid"] == TXID

    def test_a_row_from_before_batching_gets_its_vsize_from_the_stored_bytes(
        self, client: TestClient, keys: dict[str, str], app_db: str
    ) -> None:
        _, [pid] = add_transaction(
            vsize=None, raw_hex=SEGWIT_HEX, fee_sats=282, pays=[(None, 10_000, None)]
        )

        body = get(client, f"/v1/transactions/{TXID}", keys["reader"]).json()

        assert (body["vsize"], body["fee_rate_sat_vb"]) == (141, 2.0)
        assert body["payouts"] == [
            {"id": pid, "vout": None, "amount_sats": 10_000, "fee_share_sats": None}
        ]

    def test_stored_bytes_that_do_not_parse_give_no_size_not_an_error(
        self, client: TestClient, keys: dict[str, str], app_db: str
    ) -> None:
        add_transaction(vsize=None, raw_hex="00")

        response = get(client, f"/v1/transactions/{TXID}", keys["reader"])

        assert response.status_code == 200
        assert (response.json()["vsize"], response.json()["fee_rate_sat_vb"]) == (None, None)

    def test_payouts_without_a_vout_come_after_those_with_one(
        self, client: TestClient, keys: dict[str, str], app_db: str
    ) -> None:
        add_transaction(pays=[(None, 5_000, None), (1, 6_000, 1), (0, 7_000, 1)])

        body = get(client, f"/v1/transactions/{TXID}", keys["reader"]).json()

        assert [p["vout"] for p in body["payouts"]] == [0, 1, None]

    def test_unknown_txid_is_404_with_the_uniform_error_body(
        self, client: TestClient, keys: dict[str, str], batch: list[str]
    ) -> None:
        response = get(client, f"/v1/transactions/{'ab' * 32}", keys["reader"])

        assert response.status_code == 404
        assert response.json() == {
            "error": {"code": "not_found", "message": f"no transaction with txid {'ab' * 32}"}
        }

    @pytest.mark.parametrize(
        "txid",
        [
            "abc",  # short
            TXID[:-1],  # 63
            TXID + "a",  # 65
            "ab" * 64,  # 128: a txid and a wtxid glued together
            "a" * 10_000,  # huge
            "g" * 64,  # the right length, not hex
            "0x" + TXID[:62],  # a hex prefix
            " " + TXID[1:],  # leading space (decoded from %20)
            TXID + "%0A",  # trailing newline: `$` in a Python regex would accept it
            "１" * 64,  # fullwidth digits: \d would accept them, [0-9] does not
            ("' OR '1'='1' --" + "a" * 64)[:64],  # SQL, 64 characters
            "%27%20OR%201%3D1",  # SQL, URL-encoded
            TXID[:32] + "%00" + TXID[32:63],  # NUL byte
        ],
        ids=lambda t: repr(t[:20]),
    )
    def test_anything_but_64_hex_digits_is_422_and_changes_nothing(
        self, client: TestClient, keys: dict[str, str], batch: list[str], txid: str
    ) -> None:
        response = get(client, f"/v1/transactions/{txid}", keys["reader"])

        assert response.status_code == 422, response.text
        assert response.json()["error"]["code"] == "invalid_request"
        assert "txid" in response.json()["error"]["message"]
        with get_sessionmaker()() as session:
            assert session.scalar(select(func.count()).select_from(Transaction)) == 1
            assert session.scalar(select(func.count()).select_from(Payout)) == 3

    def test_a_path_with_more_segments_is_not_this_route(
        self, client: TestClient, keys: dict[str, str], batch: list[str]
    ) -> None:
        # %2F is decoded before routing: two segments, which no transaction route serves.
        response = client.get(f"/v1/transactions/{TXID}%2Fx", headers=bearer(keys["reader"]))

        assert response.status_code == 404
        assert set(response.json()) == {"error"}

    def test_only_get_is_allowed(
        self, client: TestClient, keys: dict[str, str], batch: list[str]
    ) -> None:
        for method in ("POST", "PUT", "PATCH", "DELETE"):
            response = client.request(
                method, f"/v1/transactions/{TXID}", headers=bearer(keys["admin"])
            )

            assert response.status_code == 405
            assert response.headers["allow"] == "GET"


def page_through(client: TestClient, secret: str, **params: Any) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    while True:
        page = get(client, "/v1/transactions", secret, **params)
        assert page.status_code == 200, page.text
        seen += page.json()["items"]
        if page.json()["next_cursor"] is None:
            return seen
        params["cursor"] = page.json()["next_cursor"]


def cursor_of(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


class TestListTransactions:
    @pytest.fixture
    def five(self, app_db: str) -> list[str]:
        """Five transactions a minute apart, inserted out of order; the first pays 3 payouts."""
        txids = [f"{i:02x}" * 32 for i in range(5)]
        for i in (3, 0, 4, 1, 2):
            pays = [(0, 1_000, 10), (1, 2_000, 10), (2, 3_000, 10)] if i == 0 else [(0, 1_000, 7)]
            state = TxState.CONFIRMED if i < 2 else TxState.BROADCAST
            add_transaction(
                txids[i], fee_sats=700, vsize=140, state=state, confirmations=3 if i < 2 else 0,
                created_at=T0 + timedelta(minutes=i), pays=pays,
            )  # fmt: skip
        return txids

    def test_pages_through_everything_oldest_first(
        self, client: TestClient, keys: dict[str, str], five: list[str]
    ) -> None:
        seen = page_through(client, keys["reader"], limit=2)

        assert [item["txid"] for item in seen] == five
        assert seen[0] == {
            "txid": five[0],
            "state": "confirmed",
            "fee_sats": 700,
            "vsize": 140,
            "fee_rate_sat_vb": 5.0,
            "confirmations": 3,
            "payout_count": 3,
            "created_at": "2030-01-01T12:00:00Z",
        }
        assert [item["payout_count"] for item in seen] == [3, 1, 1, 1, 1]

    def test_two_rows_created_at_the_same_moment_are_both_listed_once(
        self, client: TestClient, keys: dict[str, str], app_db: str
    ) -> None:
        txids = [f"{i:02x}" * 32 for i in range(4)]
        for txid in txids:
            add_transaction(txid, created_at=T0)

        seen = page_through(client, keys["reader"], limit=1)

        assert sorted(item["txid"] for item in seen) == sorted(txids)

    def test_filters_by_state(
        self, client: TestClient, keys: dict[str, str], five: list[str]
    ) -> None:
        seen = page_through(client, keys["reader"], state="confirmed", limit=1)

        assert [item["txid"] for item in seen] == five[:2]

    def test_an_empty_table_is_an_empty_last_page(
        self, client: TestClient, keys: dict[str, str], app_db: str
    ) -> None:
        page = get(client, "/v1/transactions", keys["reader"])

        assert page.json() == {"items": [], "next_cursor": None}

    def test_a_cursor_is_a_position_not_a_capability(
        self, client: TestClient, keys: dict[str, str], five: list[str]
    ) -> None:
        # A hand-made cursor is accepted if it parses, and only says where to start: it shows
        # nothing that listing from the start would not.
        early = cursor_of(f"{datetime(2000, 1, 1, tzinfo=UTC).isoformat()}|{uuid.UUID(int=0)}")
        late = cursor_of(f"{datetime(2100, 1, 1, tzinfo=UTC).isoformat()}|{uuid.UUID(int=0)}")

        from_early = get(client, "/v1/transactions", keys["reader"], cursor=early).json()
        from_late = get(client, "/v1/transactions", keys["reader"], cursor=late).json()

        assert [item["txid"] for item in from_early["items"]] == five
        assert from_late == {"items": [], "next_cursor": None}

    @pytest.mark.parametrize(
        "params",
        [
            {"state": "paid"},
            {"state": "signed' OR '1'='1"},
            {"limit": 0},
            {"limit": 201},
            {"limit": -1},
            {"limit": "ten"},
            {"limit": 10**30},
            {"cursor": "nonsense"},
            {"cursor": ""},
            {"cursor": cursor_of("2030-01-01T12:00:00+00:00")},  # no id
            {"cursor": cursor_of("2030-01-01T12:00:00+00:00|not-a-uuid")},
            {"cursor": cursor_of(f"yesterday|{uuid.UUID(int=0)}")},
            {"cursor": cursor_of(f"2030-01-01T12:00:00+00:00|{uuid.UUID(int=0)}|extra")},
            {"cursor": cursor_of("2030-01-01T12:00:00+00:00|' OR 1=1 --")},
            {"cursor": cursor_of(f"0001-01-01T00:00:00+01:00|{uuid.UUID(int=0)}")},  # < year 1
            {"cursor": base64.urlsafe_b64encode(b"\xff\xfe|\x00").decode()},  # not UTF-8
            {"cursor": "%%%%"},
        ],
        ids=repr,
    )
    def test_bad_query_is_422(
        self, client: TestClient, keys: dict[str, str], five: list[str], params: dict[str, Any]
    ) -> None:
        response = get(client, "/v1/transactions", keys["reader"], **params)

        assert response.status_code == 422, response.text
        assert response.json()["error"]["code"] == "invalid_request"

    def test_a_tampered_next_cursor_is_422_naming_the_cursor(
        self, client: TestClient, keys: dict[str, str], five: list[str]
    ) -> None:
        cursor = get(client, "/v1/transactions", keys["reader"], limit=2).json()["next_cursor"]
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        tampered = cursor_of(raw.replace("|", "|x", 1))

        response = get(client, "/v1/transactions", keys["reader"], cursor=tampered)

        assert response.status_code == 422
        assert response.json()["error"]["message"] == (
            "cursor is not valid; pass next_cursor from a previous page unchanged"
        )

    def test_a_payouts_cursor_and_a_transactions_cursor_share_one_format(
        self, client: TestClient, keys: dict[str, str], five: list[str]
    ) -> None:
        cursor = get(client, "/v1/transactions", keys["reader"], limit=2).json()["next_cursor"]
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, _, row_id = raw.partition("|")

        assert datetime.fromisoformat(at) == T0 + timedelta(minutes=1)
        assert uuid.UUID(row_id)
        assert get(client, "/v1/payouts", keys["reader"], cursor=cursor).status_code == 200
