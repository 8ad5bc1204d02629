"""Scenario 8: a dead batch, and a batch that only looked dead.

Part 1: a broadcast batch's inputs are double-spent by the hot wallet itself (a transaction
paying its own address, as another tool holding its keys would), and that spend is mined and
buried PAYOUTS_DEAD_DEPTH (3 here) blocks deep. The batch is proven dead from the first block
on, but until the spend is that deep a reorg could bring the batch back, so its payouts must
wait where they are; at that depth they are re-queued, and each is paid again exactly once.

Part 2: the same with a second batch, but the spend only gets DEAD_DEPTH - 1 blocks deep: a
reorg replaces those blocks by a chain without it (the spend drops out of the mempool, as
with a peer that never saw it) and with the original batch, relayed again. Its payouts must
end paid by that original transaction only: re-queueing them on the proof alone would have
paid them a second time now.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable

from sqlalchemy import select

from cli.processes import wait_until
from shared.core.models import Transaction
from tests.chaos.harness import BATCH_MAX_PAYOUTS, PAYOUTS, ChaosStack, amounts, settle_quietly
from tests.chaos.oracle import PayoutRef

DEAD_DEPTH = 3
PER_PART = max(2 * BATCH_MAX_PAYOUTS, PAYOUTS // 2)
REQUEUED = re.compile(r"the conflict is (\d+) blocks deep")
NOTICE_SECONDS = 60  # for the confirmation tracker (every second, on a new tip) to see a block


def _broadcast_batches(
    chaos: ChaosStack, count: int, base: int
) -> tuple[list[PayoutRef], str, list[str]]:
    """Payouts made and broadcast with no block mined; and the batch paying the most of them
    (txid, payout ids)."""
    payouts = chaos.produce(amounts(count, base=base), duration=count / 20).join()
    ids = [p.id for p in payouts]
    assert settle_quietly(chaos, ids, {"broadcast"}, timeout=120), "payouts were not broadcast"
    batches: dict[str, list[str]] = defaultdict(list)
    for payout_id, txid in chaos.txids(ids).items():
        batches[txid].append(payout_id)
    txid = max(batches, key=lambda t: len(batches[t]))
    assert len(batches[txid]) > 1, f"no batch paid two payouts: {dict(batches)}"
    return payouts, txid, batches[txid]


def _stored(chaos: ChaosStack, txid: str) -> tuple[str, str | None, str]:
    """(state, last_error, raw_hex) of our stored transaction `txid`."""
    with chaos.engine().connect() as conn:
        row = conn.execute(
            select(Transaction.state, Transaction.last_error, Transaction.raw_hex).where(
                Transaction.txid == txid
            )
        ).one()
    return row.state, row.last_error, row.raw_hex


def _noted(chaos: ChaosStack, txid: str, note: str) -> Callable[[], bool]:
    return lambda: note in (_stored(chaos, txid)[1] or "")


def _bury(chaos: ChaosStack, txid: str, members: list[str], blocks: int) -> None:
    """Mine `blocks` blocks, one at a time; after each, the product must have proven `txid`
    dead and be waiting (the note says how deep the conflict is) with its payouts untouched."""
    for depth in range(1, blocks + 1):
        chaos.miner.mine_one()
        note = f"once the conflict is {DEAD_DEPTH} blocks deep (now {depth})"
        wait_until(_noted(chaos, txid, note), NOTICE_SECONDS,
                   f"{txid} to be proven dead at depth {depth}", interval=0.3)  # fmt: skip
        rows = chaos.db_rows(members)
        assert {rows[m].state for m in members} == {"broadcast"}, {m: rows[m] for m in members}
        assert set(chaos.txids(members).values()) == {txid}


def test_a_dead_batch_is_paid_again_once_and_a_shallow_reorg_back_pays_nothing_twice(
    start_chaos: Callable[..., ChaosStack],
) -> None:
    chaos = start_chaos(dead_depth=str(DEAD_DEPTH))  # the miner stays paused: blocks by hand
    node = chaos.node

    # Part 1: buried DEAD_DEPTH deep -> re-queued and paid again.
    first, dead, dead_members = _broadcast_batches(chaos, PER_PART, base=10_000)
    conflict = node.double_spend(dead, node.get_new_address())["txid"]
    chaos.faults += 1
    _bury(chaos, dead, dead_members, DEAD_DEPTH - 1)
    chaos.miner.mine_one()  # the conflict is DEAD_DEPTH deep now

    def paid_again() -> bool:
        rows, txids = chaos.db_rows(dead_members), chaos.txids(dead_members)
        return all(
            rows[m].state == "broadcast" and txids.get(m) not in (None, dead) for m in dead_members
        )

    wait_until(paid_again, 120, "the dead batch's payouts to be paid by a new batch", 0.3)
    assert _stored(chaos, dead)[0] == "conflicted"
    chaos.miner.mine_one()
    first_ids = [p.id for p in first]
    assert settle_quietly(chaos, first_ids, {"confirmed"}, timeout=120), "part 1 unconfirmed"

    # Part 2: DEAD_DEPTH - 1 deep, then a reorg brings the original back.
    second, revived, revived_members = _broadcast_batches(chaos, PER_PART, base=20_000)
    raw_hex = _stored(chaos, revived)[2]
    conflict2 = node.double_spend(revived, node.get_new_address())["txid"]
    chaos.faults += 1
    _bury(chaos, revived, revived_members, DEAD_DEPTH - 1)
    reorg = node.reorg(DEAD_DEPTH - 1, exclude=[conflict2])
    assert conflict2 in reorg["returned_to_mempool"], reorg
    node.evict(conflict2)
    node.call("sendrawtransaction", raw_hex)  # relayed again (the product may resend it too)
    chaos.miner.mine_one()
    chaos.faults += 1

    payouts = [*first, *second]
    summary = chaos.recover_and_judge("dead_batch", payouts)

    assert not summary.problems(), f"{summary.line()}\n{summary.problems()}\n{chaos.worker_logs()}"
    assert not summary.failed_with_reason, summary.failure_reasons(10)
    assert len(summary.paid_once) == len(payouts)
    ids = [p.id for p in payouts]
    now_txid = chaos.txids(ids)
    requeues = {
        payout_id: [r for r in reasons if r.startswith("re-queued")]
        for payout_id, reasons in chaos.events(ids, to_state="approved").items()
    }
    for payout_id in dead_members:
        assert now_txid[payout_id] not in (dead, conflict), payout_id
        assert chaos.signatures(payout_id) == 2, payout_id
        (reason,) = requeues[payout_id]
        assert dead in reason and conflict in reason, reason
        depth = REQUEUED.search(reason)
        assert depth and int(depth.group(1)) >= DEAD_DEPTH, reason
    for payout_id in set(ids) - set(dead_members):
        assert not requeues[payout_id], (payout_id, requeues[payout_id])
        assert chaos.signatures(payout_id) == 1, payout_id
    for payout_id in revived_members:
        assert now_txid[payout_id] == revived, payout_id
    assert _stored(chaos, revived)[0] == "confirmed"
