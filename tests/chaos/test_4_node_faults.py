"""Scenario 4: node faults while payouts flow.

Replies dropped after successful broadcasts, latency spikes past the client's timeout (the
call happened, the worker did not hear), node restarts that forget in-memory coin locks,
2-block reorgs, and mempool evictions (expiry, or a restart without mempool.dat) of a payout
transaction together with the payouts chained on its change. Each is the node telling the
worker less than what happened; none may turn into a second payment, and none may get a
payout marked `failed` while its transaction can still confirm.
"""

from __future__ import annotations

from collections.abc import Callable

from shared.node.errors import NotFound
from tests.chaos.harness import FULL, PAYOUTS, ChaosStack, amounts, pause

PRODUCE_SECONDS = 45 if FULL else 10
# Past PAYOUTS_NODE_TIMEOUT_SECONDS (3 in the chaos stack): calls run, replies come too late.
SPIKE_SECONDS = 4.0
SPIKED_METHODS = ("*", "sendrawtransaction", "fundrawtransaction", "gettransaction")
FAULTS = {"drop": 8, "spike": 6, "restart": 2, "reorg": 2, "evict": 4} if FULL else {
    "drop": 2, "spike": 2, "restart": 1, "reorg": 1, "evict": 2
}  # fmt: skip
# A hot wallet with few coins: payouts between two blocks chain on each other's change.
WALLET_COINS = 3


def _longest_chain_head(chaos: ChaosStack) -> str | None:
    """The mempool transaction with the most descendants (our payouts chained on it)."""
    entries = {t: chaos.node.get_mempool_entry(t) for t in chaos.node.call("getrawmempool")}
    ranked = sorted((e["descendantcount"], t) for t, e in entries.items() if e)
    return ranked[-1][1] if ranked else None


def _inject(chaos: ChaosStack, fault: str) -> None:
    node, rng = chaos.node, chaos.rng
    if fault == "drop":
        node.call("devnode_drop_reply", "sendrawtransaction", rng.randint(1, 3))
    elif fault == "spike":
        method = rng.choice(SPIKED_METHODS)
        node.call("devnode_set_latency", method, SPIKE_SECONDS)
        pause(rng, 0.5, 2.0)
        node.call("devnode_set_latency", method, 0)
    elif fault == "restart":
        node.call("devnode_restart")
    elif fault == "reorg":
        node.call("devnode_reorg", 2)
    else:
        head = _longest_chain_head(chaos)
        try:
            if head is None:
                return  # nothing in the mempool right now; not counted
            node.call("devnode_evict", head)
        except NotFound:
            return  # mined in the meantime; not counted
    chaos.faults += 1


def test_node_faults_never_pay_twice_and_leave_nothing_unexplained(
    start_chaos: Callable[..., ChaosStack],
) -> None:
    chaos = start_chaos(few_coins=WALLET_COINS)
    chaos.miner.resume()
    faults = [name for name, count in FAULTS.items() for _ in range(count)]
    chaos.rng.shuffle(faults)
    producer = chaos.produce(amounts(PAYOUTS), PRODUCE_SECONDS)
    gap = PRODUCE_SECONDS / len(faults)
    for fault in faults:
        pause(chaos.rng, 0.3 * gap, 1.7 * gap)
        _inject(chaos, fault)
    payouts = producer.join()

    summary = chaos.recover_and_judge("node_faults", payouts)

    assert not summary.problems(), f"{summary.line()}\n{summary.problems()}\n{chaos.worker_logs()}"
