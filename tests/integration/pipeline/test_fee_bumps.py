"""Fee bumping in the running system, judged by the node's ledger.

Real Celery workers and beat, PostgreSQL, Redis, the API over HTTP and the simulated node. Blocks
that leave transactions out are mined with `generateblock` and an empty list (as on Bitcoin
Core); the fee "jump" is `devnode_set_fee_estimate`. The beat job `payouts.maintenance.bump_fees`
does the bumping; nothing here calls it directly.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from cli.ledger import judge
from cli.processes import wait_until
from tests.integration.pipeline.conftest import simulated_node_only
from tests.support.stack import Stack

BUMP_AFTER = 2


@pytest.fixture(scope="module")
def stack_settings() -> dict[str, str]:
    return {
        "auto_max_sats": "1000000",
        "batch_window_seconds": "2",  # the payouts approved together form one batch
        "fallback_fee_rate_sat_vb": "2",
        "bump_after_blocks": str(BUMP_AFTER),
        "node_timeout_seconds": "90",  # longer than the hold below
    }


@pytest.fixture(autouse=True)
def calm_fees(stack: Stack) -> Iterator[None]:
    simulated_node_only()
    stack.node.set_fee_estimate(None)
    yield
    stack.node.call("devnode_clear_faults")
    stack.node.set_fee_estimate(None)
    stack.node.mine(1)  # whatever is left confirms; the next test starts clean


def _batch(stack: Stack, base_sats: int, count: int = 3) -> tuple[list[dict[str, Any]], str]:
    payouts = [stack.create_and_approve(base_sats + i) for i in range(count)]
    ids = [p["id"] for p in payouts]
    stack.wait_for_states(ids, {"broadcast"}, timeout=60)
    (txid,) = {stack.payout(pid)["txid"] for pid in ids}
    return payouts, txid


def _stuck_for(stack: Stack, blocks: int) -> None:
    address = stack.node.get_new_address()
    for _ in range(blocks):
        stack.node.call("generateblock", address, [])


def _txid_changes(stack: Stack, ids: list[str], old: str, timeout: float = 60) -> str:
    def changed() -> bool:
        return all(stack.payout(pid)["txid"] not in (None, old) for pid in ids)

    wait_until(changed, timeout, f"the beat job to bump {old}")
    (new,) = {stack.payout(pid)["txid"] for pid in ids}
    return str(new)


def _confirm_and_judge(stack: Stack, payouts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    ids = [p["id"] for p in payouts]
    stack.wait_for_states(ids, {"broadcast"}, timeout=60)
    stack.node.mine(1)
    stack.wait_for_states(ids, {"confirmed"}, timeout=60)
    verdict = judge(stack.node, {p["id"]: (p["destination"], p["amount_sats"]) for p in payouts})
    assert sorted(verdict.paid_once) == sorted(ids)
    assert verdict.paid_twice == [] and verdict.unpaid == []  # (earlier tests paid others)
    return [stack.payout(pid) for pid in ids]


def _rate(stack: Stack, txid: str) -> float:
    entry = stack.node.get_mempool_entry(txid)
    assert entry is not None, f"{txid} is not in the mempool"
    return float(entry["fees"]["base"]) * 1e8 / int(entry["vsize"])


def test_a_stuck_batch_is_bumped_by_beat_and_pays_each_payout_once(stack: Stack) -> None:
    payouts, original = _batch(stack, 81_000)
    ids = [p["id"] for p in payouts]
    stack.node.set_fee_estimate(14)
    _stuck_for(stack, BUMP_AFTER - 1)
    assert {stack.payout(pid)["txid"] for pid in ids} == {original}  # not stuck long enough
    _stuck_for(stack, 1)

    bumped = _txid_changes(stack, ids, original)
    assert _rate(stack, bumped) >= 14
    assert stack.node.get_mempool_entry(original) is None
    view = stack.payout(ids[0])
    assert view["transaction_versions"] == [original, bumped]
    old = stack.client.get(f"/v1/transactions/{original}", headers=stack.headers("backend"))
    assert old.json()["state"] == "replaced" and old.json()["replaced_by"] == bumped
    assert sorted(p["id"] for p in old.json()["payouts"]) == sorted(ids)

    paid = _confirm_and_judge(stack, payouts)
    assert {v["txid"] for v in paid} == {bumped}
    new = stack.client.get(f"/v1/transactions/{bumped}", headers=stack.headers("backend")).json()
    assert (new["state"], new["replaces"], new["versions"]) == (
        "confirmed", original, [original, bumped]
    )  # fmt: skip


def test_kill_between_persisting_and_broadcasting_the_replacement(stack: Stack) -> None:
    """Every worker dies while the new version is stored but not yet sent (the node holds the
    bump's sendrawtransaction and drops it when its caller dies). A new worker's rebroadcast
    job sends exactly the stored bytes; nothing is re-signed, each payout is paid once."""
    payouts, original = _batch(stack, 82_000)
    ids = [p["id"] for p in payouts]
    status = stack.node.call("devnode_status")["faults"]
    held, abandoned = (status[k].get("sendrawtransaction", 0) for k in ("held", "abandoned"))
    stack.node.call("devnode_hold", "sendrawtransaction", 80, 1)
    stack.node.set_fee_estimate(20)
    _stuck_for(stack, BUMP_AFTER)

    def faults(kind: str) -> int:
        return int(stack.node.call("devnode_status")["faults"][kind].get("sendrawtransaction", 0))

    wait_until(lambda: faults("held") == held + 1, 60, "the bump's broadcast to be held")
    for worker in stack.workers:
        worker.kill9()
    wait_until(lambda: faults("abandoned") == abandoned + 1, 20, "the held send abandoned")

    stored = {stack.payout(pid)["txid"] for pid in ids}
    (persisted,) = stored
    assert persisted != original  # the new version was stored first ...
    assert stack.node.get_mempool_entry(persisted) is None  # ... and never sent
    assert stack.node.get_mempool_entry(original) is not None
    versions = stack.client.get(f"/v1/transactions/{persisted}",
                                headers=stack.headers("backend")).json()  # fmt: skip
    assert versions["state"] == "signed" and versions["replaces"] == original

    stack.start_worker()
    wait_until(lambda: stack.node.get_mempool_entry(persisted) is not None, 60,
               "the rebroadcast job to send the stored replacement")  # fmt: skip
    paid = _confirm_and_judge(stack, payouts)
    assert {v["txid"] for v in paid} == {persisted}


def test_a_stuck_parent_whose_change_funds_a_later_batch_is_accelerated_through_it(
    stack: Stack,
) -> None:
    """The hot wallet has one coin: the second batch spends the first one's change. The beat
    job cannot replace the parent (it has a descendant), so it replaces the child with a fee
    that makes the two pay the estimate together; a block that takes packages by fee rate then
    confirms both."""
    coins = [f"{c['txid']}:{c['vout']}" for c in stack.node.list_unspent(1)]
    stack.node.lock_unspent(coins[1:])  # released again below, before the orphan job would
    try:
        first, parent = _batch(stack, 83_000, 2)
        second, child = _batch(stack, 84_000, 2)
    finally:
        stack.node.unlock_unspent(coins[1:])
    entry = stack.node.get_mempool_entry(child)
    assert entry is not None and entry["depends"] == [parent]

    stack.node.set_fee_estimate(12)
    _stuck_for(stack, BUMP_AFTER)
    second_ids = [p["id"] for p in second]
    accelerated = _txid_changes(stack, second_ids, child)
    assert {stack.payout(p["id"])["txid"] for p in first} == {parent}  # the parent stays
    package = stack.node.get_mempool_entry(accelerated)
    assert package is not None and package["depends"] == [parent]
    assert float(package["fees"]["ancestor"]) * 1e8 / package["ancestorsize"] >= 12

    stack.node.call("devnode_set_mining_min_fee_rate", 10)  # a miner that wants >= 10 sat/vB
    try:
        paid = _confirm_and_judge(stack, first + second)
    finally:
        stack.node.call("devnode_set_mining_min_fee_rate")
    assert {v["txid"] for v in paid} == {parent, accelerated}


def test_an_operator_bumps_over_http_and_sees_every_refusal(stack: Stack) -> None:
    payouts, original = _batch(stack, 85_000, 2)
    ids = [p["id"] for p in payouts]
    client = stack.client

    def bump(txid: str, rate: Any, who: str = "approver") -> Any:
        return client.post(f"/v1/transactions/{txid}/bump", json={"fee_rate_sat_vb": rate},
                           headers=stack.headers(who))  # fmt: skip

    assert bump(original, 10, who="backend").status_code == 403  # payouts:approve only
    assert bump(original, 10, who="signer").status_code == 403
    assert bump(original, "10").status_code == 422  # a number, not a string
    low = bump(original, 1)
    assert (low.status_code, low.json()["error"]["code"]) == (422, "rate_too_low")
    over = bump(original, 10_000)
    assert (over.status_code, over.json()["error"]["code"]) == (422, "over_cap")
    unknown = bump("ab" * 32, 10)
    assert unknown.status_code == 404

    done = bump(original, 9)
    assert done.status_code == 202, done.text
    body = done.json()
    assert (body["txid"], body["method"], body["replaced_txid"]) == (original, "rbf", original)
    assert body["broadcast"] == "sent" and body["new_fee_rate_sat_vb"] >= 9
    assert body["transaction"]["replaces"] == original
    new = body["new_txid"]
    assert {stack.payout(pid)["txid"] for pid in ids} == {new}

    stale = bump(original, 20)
    assert (stale.status_code, stale.json()["error"]["code"]) == (409, "already_replaced")
    assert new in stale.json()["error"]["message"]
    events = client.get(f"/v1/payouts/{ids[0]}/events", headers=stack.headers("backend")).json()
    assert any((e["reason"] or "").startswith(f"fee bump: {original}") for e in events["items"])

    paid = _confirm_and_judge(stack, payouts)
    assert {v["txid"] for v in paid} == {new}
    mined = bump(new, 30)
    assert (mined.status_code, mined.json()["error"]["code"]) == (409, "already_confirmed")
