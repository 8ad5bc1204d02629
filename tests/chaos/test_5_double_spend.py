"""Scenario 5: a foreign double-spend of broadcast payouts' inputs.

The victims must end `failed` with a reason naming the conflicting spend, with nothing paid to
their destinations: their transaction is proven dead, and a new one would need a human's
decision (docs/architecture.md §4, §5.2). Every other payout is paid exactly once.
"""

from __future__ import annotations

from collections.abc import Callable

from tests.chaos.harness import PAYOUTS, ChaosStack, amounts, settle_quietly

VICTIMS = max(3, PAYOUTS // 20)


def test_double_spent_payouts_fail_with_the_conflict_and_the_rest_pay_once(
    start_chaos: Callable[..., ChaosStack],
) -> None:
    # A confirmed coin per payout: no payout spends another's unconfirmed change, so each
    # double-spend takes exactly one payout's transaction (not its descendants too).
    chaos = start_chaos(coins=PAYOUTS + 20)
    # No blocks yet: the double-spends must hit transactions still in the mempool.
    payouts = chaos.produce(amounts(PAYOUTS), duration=PAYOUTS / 20).join()
    ids = [p.id for p in payouts]
    assert settle_quietly(chaos, ids, {"broadcast"}, timeout=120), "payouts were not broadcast"

    txids = chaos.txids(ids)
    victims = chaos.rng.sample(ids, VICTIMS)
    foreign = {}
    for payout_id in victims:
        foreign[payout_id] = chaos.node.call("devnode_double_spend", txids[payout_id])["txid"]
        chaos.faults += 1

    summary = chaos.recover_and_judge("double_spend", payouts, frozenset(foreign.values()))

    assert not summary.problems(), f"{summary.line()}\n{summary.problems()}\n{chaos.worker_logs()}"
    assert sorted(summary.failed_with_reason) == sorted(victims)
    assert len(summary.paid_once) == PAYOUTS - VICTIMS
    rows = chaos.db_rows(victims)
    for payout_id in victims:
        reason = rows[payout_id].last_error or ""
        assert foreign[payout_id] in reason and txids[payout_id] in reason, reason
        assert chaos.signatures(payout_id) == 1, "a victim was re-signed with new inputs"
