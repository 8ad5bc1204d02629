"""Scenario 2: Redis FLUSHALL and a Redis restart mid-run.

Redis is both the Celery broker and the lock service, and it persists nothing here: every
queued and unacked message, every payout lock and every sweeper mark is lost, twice over. The
DB claim is the guarantee, so nothing may be paid twice; beat's sweeper re-publishes what the
lost messages would have done, so nothing may be left behind; and the workers, beat and the
API must reconnect to the restarted server by themselves.
"""

from __future__ import annotations

from collections.abc import Callable

from tests.chaos.harness import FULL, PAYOUTS, ChaosStack, amounts, pause
from tests.chaos.redis_server import RestartableRedis

PRODUCE_SECONDS = 40 if FULL else 10
FLUSHES, RESTARTS = (4, 2) if FULL else (2, 1)


def test_lost_redis_state_never_pays_twice_or_loses_a_payout(
    own_redis: RestartableRedis, start_chaos: Callable[..., ChaosStack]
) -> None:
    chaos = start_chaos(redis_url=own_redis.url)  # broker and locks both on it
    chaos.miner.resume()
    faults = ["flushall"] * FLUSHES + ["restart"] * RESTARTS
    chaos.rng.shuffle(faults)
    producer = chaos.produce(amounts(PAYOUTS), PRODUCE_SECONDS)
    gap = PRODUCE_SECONDS / len(faults)
    for fault in faults:
        pause(chaos.rng, 0.3 * gap, 1.7 * gap)
        if fault == "flushall":
            own_redis.flushall()
        else:
            own_redis.crash()
            pause(chaos.rng, 0.5, 2.0)  # down long enough for clients to notice
            own_redis.start()
        chaos.faults += 1
    payouts = producer.join()
    # Before recovery, which would restart them: nobody may have died of the outage.
    dead = [p.name for p in [*chaos.stack.workers, chaos.stack.beat] if p and not p.alive()]

    summary = chaos.recover_and_judge("redis_loss", payouts)

    assert not summary.problems(), f"{summary.line()}\n{summary.problems()}\n{chaos.worker_logs()}"
    assert not dead, f"died of the Redis outage: {dead}"
