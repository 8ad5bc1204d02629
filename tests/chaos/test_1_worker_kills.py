"""Scenario 1: kill -9 of random worker processes at random moments; workers restarted."""

from __future__ import annotations

from tests.chaos.harness import FULL, PAYOUTS, ChaosStack, amounts, pause

KILLS = 32 if FULL else 6
# At these kill counts every worker dies at once, while one of them runs a beat job.
WHOLE_FLEET_AT = {KILLS // 3, 2 * KILLS // 3} if FULL else {KILLS // 2}
# Payouts keep arriving for about as long as the kills go on, so kills land mid-payout.
PRODUCE_SECONDS = 40 if FULL else 8


def test_worker_kills_never_pay_twice_and_leave_nothing_unexplained(chaos: ChaosStack) -> None:
    chaos.miner.resume()
    producer = chaos.produce(amounts(PAYOUTS), PRODUCE_SECONDS)
    gap = PRODUCE_SECONDS / KILLS
    while len(chaos.kills) < KILLS:
        pause(chaos.rng, 0.3 * gap, 1.7 * gap)
        if len(chaos.kills) in WHOLE_FLEET_AT:
            chaos.kill_all_workers_mid_maintenance()
        else:
            chaos.kill_random_worker()
    payouts = producer.join()

    summary = chaos.recover_and_judge("worker_kills", payouts)

    assert not summary.problems(), f"{summary.line()}\n{summary.problems()}\n{chaos.worker_logs()}"
