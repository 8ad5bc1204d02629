"""Scenario 7: a burst of approvals on a hot wallet of one coin, with blocks far apart (one
every 30 s, 5 s short; the first only once a batch had to wait for it).

Every batch spends the previous batch's unconfirmed change, so after 25 batches the wallet's
only coin is at Core's unconfirmed-chain limit (25 ancestors / descendants) and funding is
refused (-4 "Unconfirmed UTXOs are available, but spending them creates a chain of
transactions that will be rejected by the mempool") until a block confirms the chain. That
wait is no fault of any payout: the batch gives its claim back without using up attempts and
is paid after a later block. Nothing may be paid twice, nothing left behind, and nothing
failed, however often a payout waited.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

from cli.processes import wait_until
from tests.chaos.harness import FULL, RECOVERY_SECONDS, ChaosStack, amounts

PAYOUTS = 1000 if FULL else 150
BLOCK_EVERY_SECONDS = 30.0 if FULL else 5.0
# Small batches, so the burst makes many more of them than a chain of 25 holds: 100 full
# (4 chains' worth), 50 short (2).
BATCH_MAX_PAYOUTS = 10 if FULL else 3
WALLET_COINS = 1
BURST_THREADS = 8
# At 25 batches a block, the last ones wait this many blocks; then a block to confirm them,
# and the sweeper's and the retries' delays after each block.
BLOCKS_NEEDED = -(-PAYOUTS // BATCH_MAX_PAYOUTS // 25) + 2
DEADLINE_SECONDS = max(RECOVERY_SECONDS, 2 * BLOCKS_NEEDED * BLOCK_EVERY_SECONDS)
# What a claim given back to wait for coins says (shared/sending/batch_build.py WaitForCoins).
WAIT_MARKERS = ("unconfirmed-chain limit", "too-long-mempool-chain", "insufficient funds")


def _released(chaos: ChaosStack, ids: list[str]) -> tuple[list[str], list[str]]:
    """The reasons of the claims given back so far: (the waits for coins, all of them)."""
    released = chaos.events(ids, to_state="approved", from_state="claimed").values()
    reasons = [reason for payout_reasons in released for reason in payout_reasons]
    return [r for r in reasons if any(marker in r for marker in WAIT_MARKERS)], reasons


def test_a_one_coin_wallet_pays_a_burst_once_each_waiting_for_blocks_without_failing(
    start_chaos: Callable[..., ChaosStack],
) -> None:
    chaos = start_chaos(
        only_coins=WALLET_COINS, mine_every=BLOCK_EVERY_SECONDS,
        batch_max_payouts=str(BATCH_MAX_PAYOUTS),
    )  # fmt: skip
    started = time.monotonic()
    payouts = chaos.produce(amounts(PAYOUTS), duration=0, threads=BURST_THREADS).join()
    burst = time.monotonic() - started
    ids = [p.id for p in payouts]
    # No block before the chain is full (a batch had to wait): a block during the burst could
    # otherwise always come just in time on a slow machine. Then one every interval.
    with contextlib.suppress(TimeoutError):  # then the check below fails, saying why
        wait_until(lambda: bool(_released(chaos, ids)[0]), 120, "a batch to wait for a block")
    chaos.miner.resume()

    summary = chaos.recover_and_judge("few_coins", payouts, deadline=DEADLINE_SECONDS)

    waits, reasons = _released(chaos, ids)
    others = sorted({r[:120] for r in reasons} - {r[:120] for r in waits})
    print(f"  burst of {PAYOUTS} approvals took {burst:.1f}s; {len(waits)} claims were given "
          f"back to wait for a block, {len(reasons) - len(waits)} for another reason "
          f"{others[:3]}", flush=True)  # fmt: skip
    assert not summary.problems(), f"{summary.line()}\n{summary.problems()}\n{chaos.worker_logs()}"
    assert not summary.failed_with_reason, summary.failure_reasons(10)
    assert len(summary.paid_once) == PAYOUTS
    # Else the scenario did not test what it is for (a harness fault, not the product's).
    assert waits, "no batch ever waited for coins: the chain limit was never reached"
