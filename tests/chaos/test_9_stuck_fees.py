"""Scenario 9: stuck fees.

Payouts flow while the fee market moves under them. Batches start at 2 sat/vB (the fallback:
no estimate yet); mid-run the estimate jumps and the miner starts leaving out everything that
pays less than it wants (`devnode_set_mining_min_fee_rate`, package-aware like Core's block
assembler). Every batch broadcast before the jump is stuck; the beat job must bump each one
(RBF, or CPFP through the youngest batch chained on its change) so that it is mined. Later the
estimate jumps again, so some payments get a third version. A worker is killed now and then,
a bump's broadcast reply is dropped.

The verdict is the ledger's: paid_twice = 0 and unpaid = 0, with the miner still refusing
low-fee transactions until every payout confirmed (nothing is mined because the test relented).
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import func, select

from cli.processes import wait_until
from shared.core.models import Payout, PayoutEvent, Transaction
from tests.chaos.harness import (
    FULL,
    PAYOUTS,
    RECOVERY_SECONDS,
    ChaosStack,
    amounts,
    pause,
    settle_quietly,
)

PRODUCE_SECONDS = 40 if FULL else 12
# (estimate the node gives, the lowest package fee rate the miner takes), in sat/vB.
JUMPS = ((12, 8), (30, 20))
KILLS = 4 if FULL else 1
BUMP_AFTER_BLOCKS = 2


def _jump(chaos: ChaosStack, estimate: int, mining_min: int, *, required: bool) -> None:
    """Make sure some broadcast batch pays less than the new minimum (the miner pauses until
    one is in the mempool: without one the scenario would test nothing), then raise the
    estimate and the miner's minimum, and let the miner go on."""
    chaos.miner.pause()
    try:
        waiting = _low_fee_in_mempool(chaos, mining_min)
        assert waiting or not required, "no batch below the new minimum to get stuck"
        chaos.node.set_fee_estimate(estimate)
        chaos.node.call("devnode_set_mining_min_fee_rate", mining_min)
        chaos.faults += 1
    finally:
        chaos.miner.resume()


def _low_fee_in_mempool(chaos: ChaosStack, below: int, timeout: float = 30) -> bool:
    def found() -> bool:
        entries = chaos.node.call("getrawmempool", True).values()
        return any(float(e["fees"]["base"]) * 1e8 / e["vsize"] < below for e in entries)

    try:
        wait_until(found, timeout, f"a mempool transaction below {below} sat/vB", interval=0.2)
    except TimeoutError:
        return False
    return True


def test_stuck_fees_are_bumped_until_every_payout_is_mined_once(
    start_chaos: Callable[..., ChaosStack],
) -> None:
    chaos = start_chaos(
        few_coins=3,  # later batches chain on stuck batches' change: CPFP is needed
        bump_after_blocks=str(BUMP_AFTER_BLOCKS),
        fallback_fee_rate_sat_vb="2",
        max_fee_rate_sat_vb="60",
    )  # fmt: skip
    node = chaos.node
    chaos.miner.resume()
    producer = chaos.produce(amounts(PAYOUTS), PRODUCE_SECONDS)
    third = PRODUCE_SECONDS / 3
    pause(chaos.rng, 0.8 * third, 1.2 * third)
    _jump(chaos, *JUMPS[0], required=True)
    for _ in range(KILLS):
        pause(chaos.rng, 0.2 * third / KILLS, 0.6 * third / KILLS)
        chaos.kill_random_worker()
        chaos.faults += 1
        chaos.ensure_workers_running()
    node.call("devnode_drop_reply", "sendrawtransaction", 1)
    chaos.faults += 1
    pause(chaos.rng, 0.8 * third, 1.0 * third)
    _jump(chaos, *JUMPS[1], required=False)  # the producers may be done by then
    payouts = producer.join()
    ids = [p.id for p in payouts]

    # Recovery with the miner still picky: only bumped transactions can confirm now.
    chaos.ensure_workers_running()
    settled = settle_quietly(chaos, ids, {"confirmed", "failed"}, timeout=RECOVERY_SECONDS)
    with chaos.engine().connect() as conn:
        bumps = conn.execute(
            select(func.count()).select_from(Transaction).where(
                Transaction.replaces_txid.is_not(None)
            )
        ).scalar_one()  # fmt: skip
        paid_by_a_bump = conn.execute(
            select(func.count()).select_from(Payout)
            .join(Transaction, Payout.tx_id == Transaction.id)
            .where(Payout.id.in_(ids), Transaction.replaces_txid.is_not(None))
        ).scalar_one()  # fmt: skip
        noted = conn.execute(
            select(func.count()).select_from(PayoutEvent).where(
                PayoutEvent.reason.like("fee bump%")
            )
        ).scalar_one()  # fmt: skip
    node.call("devnode_set_mining_min_fee_rate")  # judge with an ordinary miner again
    summary = chaos.recover_and_judge("stuck_fees", payouts)

    assert not summary.problems(), f"{summary.line()}\n{summary.problems()}\n{chaos.worker_logs()}"
    assert not summary.failed_with_reason, summary.failure_reasons(10)
    assert settled, "payouts were left unconfirmed while the miner wanted higher fees"
    # The miner refused every low-fee package: payouts confirmed under a bumped version (or
    # accelerated by one), and their audit trails say so.
    assert bumps >= 1 and paid_by_a_bump >= 1 and noted >= 1, (bumps, paid_by_a_bump, noted)
