"""Scenario 6: a manual claimer hammering every payout while workers run.

Automatic payouts must refuse every manual claim (409, saying why) at every stage; each
manual-route payout is granted to exactly one of the competing signers, who pays it once.
"""

from __future__ import annotations

from cli.processes import wait_until
from tests.chaos.hammer import ManualHammer
from tests.chaos.harness import FULL, PAYOUTS, ChaosStack, amounts

MANUAL = max(4, PAYOUTS // 10)
MANUAL_BASE_SATS = 1_500_000  # above the chaos stack's PAYOUTS_AUTO_MAX_SATS of 1,000,000
PRODUCE_SECONDS = 40 if FULL else 8
HAMMER_THREADS = 4
MIN_ROUNDS = 3
REFUSALS_FOR_AUTOMATIC = {"automatic_processing", "claimed_by_worker"}


def test_manual_claims_never_pay_an_automatic_payout_and_one_signer_wins_each_manual_one(
    chaos: ChaosStack,
) -> None:
    chaos.miner.resume()
    mixed = amounts(PAYOUTS - MANUAL) + amounts(MANUAL, base=MANUAL_BASE_SATS)
    chaos.rng.shuffle(mixed)
    producer = chaos.produce(mixed, PRODUCE_SECONDS)
    keys = [("signer", "signer2")[n % 2] for n in range(HAMMER_THREADS)]
    hammer = ManualHammer(chaos.stack, producer.snapshot, keys)
    try:
        payouts = producer.join()
        manual = [p.id for p in payouts if p.route == "manual"]
        automatic = [p.id for p in payouts if p.route == "automatic"]

        def hammered_enough() -> bool:
            # Every payout must have been offered to the signers at least once: on a loaded
            # machine the last payouts produced can be paid before any hammer thread reaches
            # them, and rounds finished before they existed do not count for them.
            return (
                hammer.rounds >= MIN_ROUNDS
                and all(hammer.replies.get(i) for i in automatic)
                and all(hammer.submitted.get(i) for i in manual)
                and not chaos.unsettled(automatic)
            )

        wait_until(hammered_enough, 180, "the hammer to outlast the workers", interval=0.5)
    finally:
        hammer.stop()
    chaos.faults = hammer.claims

    summary = chaos.recover_and_judge("manual_hammer", payouts)

    assert len(manual) == MANUAL and len(automatic) == PAYOUTS - MANUAL
    assert not summary.problems(), f"{summary.line()}\n{summary.problems()}\n{chaos.worker_logs()}"
    never_tried = [i for i in automatic if not hammer.replies.get(i)]
    assert not never_tried, f"the hammer never tried to claim {never_tried}: a harness fault"
    for payout_id in automatic:
        seen = hammer.replies[payout_id]
        assert {status for status, _ in seen} == {409}, (payout_id, seen)
        assert {code for _, code in seen} <= REFUSALS_FOR_AUTOMATIC, (payout_id, seen)
    for payout_id in manual:
        assert len(hammer.winners[payout_id]) == 1, (payout_id, hammer.replies[payout_id])
        assert hammer.submitted[payout_id] == [200], (payout_id, hammer.submitted[payout_id])
        assert set(hammer.replies[payout_id]) - {(200, "")} <= {(409, "invalid_state")}
        assert chaos.stack.payout(payout_id)["claimed_by"].startswith("manual:")
    assert set(summary.paid_once) == set(manual) | set(automatic)
