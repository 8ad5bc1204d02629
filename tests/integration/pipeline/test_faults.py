"""Node faults and funding problems end in a clear state with a reason, never a loss."""

from __future__ import annotations

import pytest

from cli.ledger import judge
from tests.integration.pipeline.conftest import simulated_node_only
from tests.support.stack import Stack

BIG = str(1_000_000 * 100_000_000)  # 1M BTC: lets a payout exceed the hot wallet's balance


@pytest.fixture(scope="module")
def stack_settings() -> dict[str, str]:
    return {
        "max_payout_sats": BIG,
        "auto_max_sats": BIG,
        "auto_daily_sats": BIG,
        "node_timeout_seconds": "2",
    }


def _events(stack: Stack, payout_id: str) -> list[dict]:  # type: ignore[type-arg]
    with stack.http() as client:
        reply = client.get(f"/v1/payouts/{payout_id}/events", headers=stack.headers("backend"))
        assert reply.status_code == 200
        events: list[dict] = reply.json()["items"]  # type: ignore[type-arg]
        return events


def test_dropped_reply_after_broadcast_sends_no_second_transaction(stack: Stack) -> None:
    simulated_node_only()
    stack.node.call("devnode_drop_reply", "sendrawtransaction", 1)
    payout = stack.create_and_approve(33_000)
    stack.wait_for_states([payout["id"]], {"broadcast"}, timeout=60)
    txid = stack.payout(payout["id"])["txid"]
    stack.node.generate_to_address(1, stack.node.get_new_address())
    stack.wait_for_states([payout["id"]], {"confirmed"}, timeout=60)
    assert stack.payout(payout["id"])["txid"] == txid
    verdict = judge(stack.node, {payout["id"]: (payout["destination"], payout["amount_sats"])})
    assert verdict.paid_once == [payout["id"]]


def test_insufficient_funds_keeps_the_payout_approved_with_the_reason(stack: Stack) -> None:
    too_much = stack.node.get_balance_sats() + 100 * 100_000_000
    payout = stack.create_and_approve(too_much)

    def has_reason() -> bool:
        current = stack.payout(payout["id"])
        return current["state"] == "approved" and "insufficient" in (current["last_error"] or "")

    from cli.processes import wait_until

    wait_until(has_reason, 60, "the insufficient-funds reason to show")
    # Top the wallet up: the payout is retried with backoff and paid, once.
    while stack.node.get_balance_sats() < too_much + 10 * 100_000_000:
        stack.node.generate_to_address(50, stack.node.get_new_address())
    stack.wait_for_states([payout["id"]], {"broadcast", "confirmed"}, timeout=120)
    stack.node.generate_to_address(1, stack.node.get_new_address())
    stack.wait_for_states([payout["id"]], {"confirmed"}, timeout=60)
    verdict = judge(stack.node, {payout["id"]: (payout["destination"], payout["amount_sats"])})
    assert verdict.paid_once == [payout["id"]]


def test_node_timeouts_release_the_claim_with_a_reason_then_pay(stack: Stack) -> None:
    simulated_node_only()
    stack.node.call("devnode_set_latency", "fundrawtransaction", 5)  # > 2 s client timeout
    try:
        payout = stack.create_and_approve(44_000)

        def reason_recorded() -> bool:
            return "could not build" in (stack.payout(payout["id"])["last_error"] or "")

        from cli.processes import wait_until

        wait_until(reason_recorded, 60, "the node timeout to be recorded")
    finally:
        stack.node.call("devnode_set_latency", "fundrawtransaction", 0)
    stack.wait_for_states([payout["id"]], {"broadcast", "confirmed"}, timeout=120)
    stack.node.generate_to_address(1, stack.node.get_new_address())
    stack.wait_for_states([payout["id"]], {"confirmed"}, timeout=60)
    verdict = judge(stack.node, {payout["id"]: (payout["destination"], payout["amount_sats"])})
    assert verdict.paid_once == [payout["id"]]


def test_destination_rejected_by_the_node_fails_the_payout_with_the_reason(stack: Stack) -> None:
    simulated_node_only()
    stack.node.call(
        "devnode_fail_next", "createrawtransaction", -5, "Invalid Bitcoin address: test", 1
    )
    payout = stack.create_and_approve(55_000)
    stack.wait_for_states([payout["id"]], {"failed"}, timeout=60)
    current = stack.payout(payout["id"])
    assert "destination" in current["last_error"] and current["txid"] is None
    assert [e["to_state"] for e in _events(stack, payout["id"])][-1] == "failed"
