"""Races that must resolve in the database, not by luck: identical idempotent creates,
competing approvals of one payout, and concurrent approvals against the daily budget."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import redis

from tests.integration.api.conftest import ApiServer, bearer, db_snapshot, queued_messages
from tests.unit.shared.factories import REGTEST_P2WPKH

pytestmark = pytest.mark.integration

BODY = {"destination": REGTEST_P2WPKH, "amount_sats": 10_000}


def all_at_once(
    n: int, call: Callable[[int, httpx.Client], httpx.Response], url: str
) -> list[httpx.Response]:
    """Run `call` in n threads released together by a barrier, one HTTP client each."""
    barrier = threading.Barrier(n)

    def run(i: int) -> httpx.Response:
        with httpx.Client(base_url=url, timeout=30) as client:
            client.get("/healthz")  # connect first, so the requests leave together
            barrier.wait(timeout=30)
            return call(i, client)

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(run, range(n)))


def test_concurrent_identical_creates_make_one_payout(
    api_server: ApiServer, keys: dict[str, str], pg_db: str
) -> None:
    headers = bearer(keys["creator"], **{"Idempotency-Key": "same-for-all"})

    responses = all_at_once(
        12, lambda _i, c: c.post("/v1/payouts", json=BODY, headers=headers), api_server.url
    )

    assert Counter(r.status_code for r in responses) == {201: 1, 200: 11}
    assert len({r.json()["id"] for r in responses}) == 1
    rows = db_snapshot(pg_db)
    assert (len(rows["payouts"]), len(rows["idempotency_keys"])) == (1, 1)


def test_competing_approvals_of_one_payout_have_one_winner(
    api_server: ApiServer, client: httpx.Client, keys: dict[str, str], broker: redis.Redis
) -> None:
    payout_id = client.post(
        "/v1/payouts", json=BODY, headers=bearer(keys["creator"], **{"Idempotency-Key": "k"})
    ).json()["id"]
    approvers = [keys["approver"], keys["approver2"], keys["admin"]] * 3

    responses = all_at_once(
        len(approvers),
        lambda i, c: c.post(f"/v1/payouts/{payout_id}/approve", headers=bearer(approvers[i])),
        api_server.url,
    )

    assert Counter(r.status_code for r in responses) == {200: 1, 409: len(approvers) - 1}
    assert len(queued_messages(broker)) == 1
    events = client.get(f"/v1/payouts/{payout_id}/events", headers=bearer(keys["reader"])).json()
    assert [e["to_state"] for e in events["items"]] == ["awaiting_approval", "approved"]


def test_concurrent_approvals_never_overspend_the_daily_budget(
    api_server: ApiServer, client: httpx.Client, keys: dict[str, str], broker: redis.Redis
) -> None:
    # Budget 3_000_000; eight approvals of 1_000_000 racing must yield exactly 3 automatic.
    ids = [
        client.post(
            "/v1/payouts",
            json={**BODY, "amount_sats": 1_000_000},
            headers=bearer(keys["creator"], **{"Idempotency-Key": f"k{i}"}),
        ).json()["id"]
        for i in range(8)
    ]

    responses = all_at_once(
        len(ids),
        lambda i, c: c.post(f"/v1/payouts/{ids[i]}/approve", headers=bearer(keys["approver"])),
        api_server.url,
    )

    assert all(r.status_code == 200 for r in responses)
    assert Counter(r.json()["route"] for r in responses) == {"automatic": 3, "manual": 5}
    # One wake-up for the batch run that will pay all three (no run has claimed yet).
    assert len(queued_messages(broker)) == 1
