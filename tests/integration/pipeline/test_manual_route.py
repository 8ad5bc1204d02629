"""The manual PSBT route pays once, and the workers never touch manual payouts."""

from __future__ import annotations

import concurrent.futures
import threading
from typing import Any

import httpx

from cli.addresses import external_address
from cli.ledger import LedgerVerdict, judge
from shared.node.amounts import btc_to_sats
from shared.sending.dispatch import enqueue_process_payout
from tests.integration.pipeline.conftest import simulated_node_only
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
        enqueue_process_payout(payout["id"], coalesce=False)

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


def _post_submit(stack: Stack, payout_id: str, body: dict[str, str], who: str = "signer"
                 ) -> httpx.Response:  # fmt: skip
    with stack.http() as client:
        return client.post(
            f"/v1/payouts/{payout_id}/manual/submit", json=body, headers=stack.headers(who)
        )


def _on_inputs(stack: Stack, inputs: list[str], outputs: dict[str, int]) -> str:
    """What a signer holding the hot wallet's keys could build: `outputs` on exactly `inputs`,
    the rest (minus a fee) back to the wallet as change, signed."""
    node = stack.node
    total = sum(btc_to_sats(node.get_tx_out(i)["value"]) for i in inputs)  # type: ignore[index]
    change = total - sum(outputs.values()) - 3_000
    raw = node.create_raw_transaction({**outputs, node.get_new_address(): change}, inputs)
    return node.sign_raw_transaction_with_wallet(raw)


def _mine_and_judge(stack: Stack, payouts: list[dict[str, Any]]) -> LedgerVerdict:
    stack.node.generate_to_address(1, stack.node.get_new_address())
    return judge(stack.node, {p["id"]: (p["destination"], p["amount_sats"]) for p in payouts})


def test_an_extra_output_paying_an_automatic_payout_again_is_refused(stack: Stack) -> None:
    # Issue 10.1: B is paid by a worker; the signer of manual payout A adds B's payment to
    # A's transaction. Accepted, it would pay B twice with both payouts showing `confirmed`.
    paid_by_worker = stack.create_and_approve(300_000)
    stack.wait_for_states([paid_by_worker["id"]], {"broadcast", "confirmed"}, timeout=60)
    manual = stack.create_and_approve(MANUAL_AMOUNT + 7)
    status, claim = _claim(stack, manual["id"], "signer")
    assert status == 200, claim
    payment = {manual["destination"]: manual["amount_sats"]}
    strangers = {external_address(): 1_000_000, external_address(): 500_000}
    crafted = [
        {**payment, paid_by_worker["destination"]: paid_by_worker["amount_sats"]},
        *({**payment, address: sats} for address, sats in strangers.items()),
    ]
    for outputs in crafted:
        reply = _post_submit(stack, manual["id"], {"tx_hex": _on_inputs(stack, claim["inputs"],
                                                                         outputs)})  # fmt: skip
        assert reply.status_code == 422, reply.text
        assert reply.json()["error"]["code"] == "unexpected_outputs"
    assert stack.payout(manual["id"])["state"] == "claimed"

    signed, _ = stack.node.wallet_process_psbt(claim["psbt"])
    assert _post_submit(stack, manual["id"], {"psbt": signed}).status_code == 200
    verdict = _mine_and_judge(stack, [paid_by_worker, manual])
    assert sorted(verdict.paid_once) == sorted([paid_by_worker["id"], manual["id"]])
    assert verdict.paid_twice == []
    assert not {address for address, _ in verdict.stray_outputs} & set(strangers)


def test_a_submit_racing_the_claim_never_pays_twice(stack: Stack) -> None:
    # Issue 10.2: four threads keep submitting a transaction on some other wallet coin while
    # the signer claims. Before the fix the submit won every time (the claim committed before
    # its inputs were reserved), and the claim's PSBT then paid the destination again.
    payouts = [stack.create_and_approve(MANUAL_AMOUNT + 100 + i) for i in range(5)]
    for payout in payouts:
        elsewhere = stack.node.fund_raw_transaction(
            stack.node.create_raw_transaction({payout["destination"]: payout["amount_sats"]}),
            fee_rate_sat_vb=2, lock_unspents=True,  # so the claim cannot pick the same coin
        )  # fmt: skip
        early = {"tx_hex": stack.node.sign_raw_transaction_with_wallet(elsewhere.hex)}
        claimed = threading.Event()

        def hammer(body: dict[str, str] = early, pid: str = payout["id"],
                   claimed: threading.Event = claimed) -> list[int]:  # fmt: skip
            seen: list[int] = []
            # Until a little after the claim, so both sides of the race are covered (bounded).
            while len(seen) < 400 and not (claimed.is_set() and len(seen) > 3):
                seen.append(_post_submit(stack, pid, body).status_code)
            return seen

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            hammering = [pool.submit(hammer) for _ in range(4)]
            try:
                status, claim = _claim(stack, payout["id"], "signer")
            finally:
                claimed.set()
            statuses = [s for f in hammering for s in f.result(timeout=60)]
        assert status == 200, claim
        assert 200 not in statuses, statuses  # 409 before the claim, 422 after it
        # The signer signs and broadcasts the claim's PSBT themselves (their right to).
        signed, _ = stack.node.wallet_process_psbt(claim["psbt"])
        final, _ = stack.node.finalize_psbt(signed)
        stack.node.send_raw_transaction(final or "")

    verdict = _mine_and_judge(stack, payouts)
    assert len(verdict.paid_once) == 5 and verdict.paid_twice == [], verdict


def test_a_node_outage_during_submit_is_503_and_the_same_psbt_goes_through_after(
    stack: Stack,
) -> None:
    simulated_node_only()
    payout = stack.create_and_approve(MANUAL_AMOUNT + 9)
    status, claim = _claim(stack, payout["id"], "signer")
    assert status == 200, claim
    signed, _ = stack.node.wallet_process_psbt(claim["psbt"])
    stack.node.call("devnode_drop_reply", "finalizepsbt", 5)
    try:
        reply = _post_submit(stack, payout["id"], {"psbt": signed})
    finally:
        stack.node.call("devnode_clear_faults")
    assert reply.status_code == 503, reply.text
    assert reply.json()["error"]["code"] == "node_unavailable"
    assert stack.payout(payout["id"])["state"] == "claimed"
    again = _post_submit(stack, payout["id"], {"psbt": signed})
    assert again.status_code == 200, again.text
    verdict = _mine_and_judge(stack, [payout])
    assert verdict.paid_once == [payout["id"]]
