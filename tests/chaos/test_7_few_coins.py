"""Scenario 7: a burst of approvals on a hot wallet of one coin, with blocks far apart.

Every batch spends the previous batch's unconfirmed change, so after 25 batches the wallet's
only coin is at Core's unconfirmed-chain limit (25 ancestors / descendants) and funding is
refused (-4 "Unconfirmed UTXOs are available, but spending them creates a chain of
transactions that will be rejected by the mempool") until a block confirms the chain. That
wait is no fault of any payout: the batch gives its claim back without using up attempts and
is paid after a later block. Nothing may be paid twice, nothing left behind, and nothing
failed, however often a payout waited.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from tests.chaos.harness import FULL, RECOVERY_SECONDS, ChaosStack, amounts

PAYOUTS = 1000 if FULL else 200
BLOCK_EVERY_SECONDS = 30.0 if FULL else 10.0
# Small batches, so one block interval makes many more of them than a chain of 25 holds even
# at a slow approval rate: 100 batches full (4 chains' worth), 67 short (almost 3).
BATCH_MAX_PAYOUTS = 10 if FULL else 3
WALLET_COINS = 1
BURST_THREADS = 8
# At 25 batches a block, the last ones wait this many blocks; then a block to confirm them,
# and the sweeper's and the retries' delays after each block.
BLOCKS_NEEDED = -(-PAYOUTS // BATCH_MAX_PAYOUTS // 25) + 2
DEADLINE_SECONDS = max(RECOVERY_SECONDS, 2 * BLOCKS_NEEDED * BLOCK_EVERY_SECONDS)
# What a claim given back to wait for coins says (shared/sending/batch_build.py WaitForCoins).
WAIT_MARKERS = ("unconfirmed-chain limit", "too-long-mempool-chain", "insufficient funds")


def test_a_one_coin_wallet_pays_a_burst_once_each_waiting_for_blocks_without_failing(
    start_chaos: Callable[..., ChaosStack],
) -> None:
    chaos = start_chaos(
        only_coins=WALLET_COINS, mine_every=BLOCK_EVERY_SECONDS,
        batch_max_payouts=str(BATCH_MAX_PAYOUTS),
    )  # fmt: skip
    chaos.miner.resume()
    started = time.monotonic()
    payouts = chaos.produce(amounts(PAYOUTS), duration=0, threads=BURST_THREADS).join()
    burst = time.monotonic() - started
    ids = [p.id for p in payouts]

    summary = chaos.recover_and_judge("few_coins", payouts, deadline=DEADLINE_SECONDS)

    waits = [
        reason
        for reasons in chaos.events(ids, to_state="approved").values()
        for reason in reasons
        if any(marker in reason for marker in WAIT_MARKERS)
    ]
    print(f"  burst of {PAYOUTS} approvals took {burst:.1f}s; {len(waits)} claims were given "
          "back to wait for a block", flush=True)  # fmt: skip
    assert not summary.problems(), f"{summary.line()}\n{summary.problems()}\n{chaos.worker_logs()}"
    assert not summary.failed_with_reason, summary.failure_reasons(10)
    assert len(summary.paid_once) == PAYOUTS
    # Else the scenario did not test what it is for (a harness fault, not the product's).
    assert waits, "no batch ever waited for coins: the chain limit was never reached"
