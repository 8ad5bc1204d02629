"""The manual PSBT route pays once, and the workers never touch manual payouts."""

from __future__ import annotations

import concurrent.futures

from shared.dispatch import enqueue_process_payout
from shared.reconcile import judge
from tests.support.stack import Stack

MANUAL_AMOUNT = 2_000_000  # above the stack's PAYOUTS_AUTO_MAX_SATS of 1,000,000


def _claim(stack: Stack, payout_id: str, who: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    with stack.http() as client:
        reply = client.post(f"/v1/payouts/{payout_id}/manual/claim", headers=stack.headers(who))
        return reply.status_code, reply.json()


def test_manual_payouts_are_paid_once_by_one_signer_and_never_by_workers(stack: Stack) -> None:
    payouts = [stack.create_and_approve(MANUAL_AMOUNT + i) for i in range(5)]
    assert {p["processing"] for p in payouts} == {"manual"}
    assert all(p["claim_url"].endswith("/manual/claim") for p in payouts)
    for payout in payouts:  # workers get messages for them anyway; they must ignore them
        enqueue_process_payout(payout["id"])

    for payout in payouts:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            results = list(
                pool.map(_claim, [stack] * 2, [payout["id"]] * 2, ["signer", "signer2"])
            )
        winners = [
            (who, body)
            for who, (status, body) in zip(["signer", "signer2"], results, strict=True)
            if status == 200
        ]
        losers = [body for status, body in results if status != 200]
        assert len(winners) == 1, results
        assert losers[0]["error"]["code"] == "invalid_state"
        who, claim = winners[0]
        signed, complete = stack.node.wallet_process_psbt(claim["psbt"])
        assert complete
        with stack.http() as client:
            submitted = client.post(
                f"/v1/payouts/{payout['id']}/manual/submit",
                json={"psbt": signed},
                headers=stack.headers(who),
            )
        assert submitted.status_code == 200, submitted.text
        assert submitted.json()["state"] == "broadcast"

    ids = [p["id"] for p in payouts]
    stack.node.generate_to_address(1, stack.node.get_new_address())
    stack.wait_for_states(ids, {"confirmed"}, timeout=60)
    for payout_id in ids:
        assert stack.payout(payout_id)["claimed_by"].startswith("manual:")
    verdict = judge(stack.node, {p["id"]: (p["destination"], p["amount_sats"]) for p in payouts})
    assert len(verdict.paid_once) == 5 and verdict.paid_twice == []


def test_submit_refuses_a_transaction_that_pays_the_wrong_amount(stack: Stack) -> None:
    payout = stack.create_and_approve(MANUAL_AMOUNT + 100)
    status, claim = _claim(stack, payout["id"], "signer")
    assert status == 200
    wrong = stack.node.create_raw_transaction({payout["destination"]: MANUAL_AMOUNT})
    funded = stack.node.fund_raw_transaction(wrong, fee_rate_sat_vb=2, lock_unspents=False)
    signed = stack.node.sign_raw_transaction_with_wallet(funded.hex)
    with stack.http() as client:
        reply = client.post(
            f"/v1/payouts/{payout['id']}/manual/submit",
            json={"tx_hex": signed},
            headers=stack.headers("signer"),
        )
        assert reply.status_code == 422
        assert reply.json()["error"]["code"] == "wrong_payment"
        other = client.post(
            f"/v1/payouts/{payout['id']}/manual/submit",
            json={"tx_hex": signed},
            headers=stack.headers("signer2"),
        )
        assert other.status_code == 409  # not the claim holder
        released = client.post(
            f"/v1/payouts/{payout['id']}/manual/release", headers=stack.headers("signer")
        )
        assert released.status_code == 200
    assert stack.payout(payout["id"])["state"] == "approved"
    # The next claim gets a PSBT on the same reserved inputs, so both can never confirm.
    status, again = _claim(stack, payout["id"], "signer2")
    assert status == 200
    assert sorted(again["inputs"]) == sorted(claim["inputs"])
