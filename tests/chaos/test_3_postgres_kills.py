"""Scenario 3: PostgreSQL connections killed mid-run (`pg_terminate_backend`).

Every connection of the API, the workers and beat dies at random moments, in the middle of
claims, persists and state transitions. A transaction cut off before COMMIT rolls back; one
cut off during COMMIT may or may not have committed, and the next attempt must cope with
either.
"""

from __future__ import annotations

from tests.chaos.harness import FULL, PAYOUTS, ChaosStack, amounts, pause

ROUNDS = 12 if FULL else 4
PRODUCE_SECONDS = 40 if FULL else 8


def test_killed_database_connections_never_pay_twice_or_lose_a_payout(chaos: ChaosStack) -> None:
    chaos.miner.resume()
    producer = chaos.produce(amounts(PAYOUTS), PRODUCE_SECONDS)
    gap = PRODUCE_SECONDS / ROUNDS
    terminated = 0
    for _ in range(ROUNDS):
        pause(chaos.rng, 0.3 * gap, 1.7 * gap)
        terminated += chaos.terminate_db_connections()
    payouts = producer.join()

    summary = chaos.recover_and_judge("postgres_kills", payouts)

    assert terminated > ROUNDS, "the kills must have hit live connections"
    assert not summary.problems(), f"{summary.line()}\n{summary.problems()}\n{chaos.worker_logs()}"
