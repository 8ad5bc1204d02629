"""Scenario 5: a foreign double-spend of broadcast batches' inputs.

Every payout of a double-spent batch has a proven-dead transaction once the foreign spend
confirms (docs/architecture.md §5.2). While that spend is shallower than PAYOUTS_DEAD_DEPTH a
reorg could still bring the batch back, so its payouts wait; once it is buried that deep they
go back to `approved` and a new batch pays them, exactly once. Nothing reaches the victims'
destinations but that new batch, and every other payout is paid once by its first batch.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable

from tests.chaos.harness import PAYOUTS, ChaosStack, amounts, settle_quietly

DEAD_DEPTH = 6  # the product's default
# Batches double-spent (2 short, 3 full): of the order of 5 % of the payouts.
VICTIM_BATCHES = max(2, PAYOUTS // 100)
REQUEUED = re.compile(r"the conflict is (\d+) blocks deep")


def test_double_spent_batches_are_paid_again_once_the_conflict_is_buried_and_the_rest_once(
    start_chaos: Callable[..., ChaosStack],
) -> None:
    # A confirmed coin per payout: no batch spends another's unconfirmed change, so each
    # double-spend takes exactly one batch's transaction (not its descendants too).
    chaos = start_chaos(coins=PAYOUTS + 20, dead_depth=str(DEAD_DEPTH))
    # No blocks yet: the double-spends must hit transactions still in the mempool.
    payouts = chaos.produce(amounts(PAYOUTS), duration=PAYOUTS / 20).join()
    ids = [p.id for p in payouts]
    assert settle_quietly(chaos, ids, {"broadcast"}, timeout=120), "payouts were not broadcast"

    first_txid = chaos.txids(ids)
    batches: dict[str, list[str]] = defaultdict(list)
    for payout_id, txid in first_txid.items():
        batches[txid].append(payout_id)
    assert len(batches) > VICTIM_BATCHES, f"only {len(batches)} batches for {PAYOUTS} payouts"
    dead = chaos.rng.sample(sorted(batches), VICTIM_BATCHES)
    victims = [payout_id for txid in dead for payout_id in batches[txid]]
    foreign = {txid: chaos.node.double_spend(txid)["txid"] for txid in dead}
    chaos.faults += len(dead)

    summary = chaos.recover_and_judge("double_spend", payouts, frozenset(foreign.values()))

    assert not summary.problems(), f"{summary.line()}\n{summary.problems()}\n{chaos.worker_logs()}"
    assert not summary.failed_with_reason, summary.failure_reasons(10)
    assert len(summary.paid_once) == PAYOUTS
    now_txid = chaos.txids(ids)
    requeues = chaos.events(victims, to_state="approved")
    for txid in dead:
        for payout_id in batches[txid]:
            assert now_txid[payout_id] not in (txid, foreign[txid]), payout_id
            assert chaos.signatures(payout_id) == 2, "signed other than once per transaction"
            # One re-queue (after its approval), naming both transactions, and only once the
            # foreign spend was buried DEAD_DEPTH deep.
            (reason,) = [r for r in requeues[payout_id] if r.startswith("re-queued")]
            assert txid in reason and foreign[txid] in reason, reason
            depth = REQUEUED.search(reason)
            assert depth and int(depth.group(1)) >= DEAD_DEPTH, reason
    for payout_id in set(ids) - set(victims):
        assert now_txid[payout_id] == first_txid[payout_id], payout_id
        assert chaos.signatures(payout_id) == 1, payout_id
