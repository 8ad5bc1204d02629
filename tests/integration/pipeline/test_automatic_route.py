"""Approved payouts are paid exactly once by real Celery workers, whatever the messages do."""

from __future__ import annotations

import concurrent.futures
import os

from cli.ledger import judge
from shared.sending.dispatch import enqueue_process_payout
from tests.support.stack import Stack

PAYOUTS = int(os.environ.get("PAYOUTS_TEST_BULK_PAYOUTS", "200"))


def _mine_and_confirm(stack: Stack, ids: list[str]) -> None:
    stack.node.generate_to_address(1, stack.node.get_new_address())
    stack.wait_for_states(ids, {"confirmed"}, timeout=120)


def test_200_payouts_with_duplicate_messages_are_each_paid_exactly_once(stack: Stack) -> None:
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        payouts = list(pool.map(lambda i: stack.create_and_approve(10_000 + i), range(PAYOUTS)))
    assert {p["processing"] for p in payouts} == {"automatic"}
    for payout in payouts:  # two extra messages for every payout, on top of the approval's
        enqueue_process_payout(payout["id"], coalesce=False)
        enqueue_process_payout(payout["id"], coalesce=False)
    ids = [p["id"] for p in payouts]

    stack.wait_for_states(ids, {"broadcast", "confirmed"}, timeout=240)
    _mine_and_confirm(stack, ids)

    verdict = judge(stack.node, {p["id"]: (p["destination"], p["amount_sats"]) for p in payouts})
    assert len(verdict.paid_once) == PAYOUTS
    assert verdict.paid_twice == [] and verdict.unpaid == [] and verdict.stray_outputs == []
    # The DB agrees with the node: each payout names the transaction and output that pays it.
    views = [stack.payout(payout_id) for payout_id in ids]
    assert None not in [v["txid"] for v in views]
    assert len({(v["txid"], v["vout"]) for v in views}) == PAYOUTS


def test_manual_claims_racing_the_workers_on_automatic_payouts_never_pay(stack: Stack) -> None:
    payouts = [stack.create_and_approve(20_000 + i) for i in range(20)]
    ids = [p["id"] for p in payouts]

    def hammer(payout_id: str) -> set[tuple[int, str]]:
        seen = set()
        with stack.http() as client:
            for _ in range(10):
                reply = client.post(
                    f"/v1/payouts/{payout_id}/manual/claim", headers=stack.headers("signer")
                )
                seen.add((reply.status_code, reply.json()["error"]["code"]))
        return seen

    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        outcomes = set().union(*pool.map(hammer, ids))

    assert {status for status, _ in outcomes} == {409}
    assert {code for _, code in outcomes} <= {"automatic_processing", "claimed_by_worker"}
    stack.wait_for_states(ids, {"broadcast", "confirmed"}, timeout=120)
    for payout_id in ids:
        assert stack.payout(payout_id)["claimed_by"].startswith("worker:")
    _mine_and_confirm(stack, ids)
    verdict = judge(stack.node, {p["id"]: (p["destination"], p["amount_sats"]) for p in payouts})
    assert len(verdict.paid_once) == len(ids) and verdict.paid_twice == []
