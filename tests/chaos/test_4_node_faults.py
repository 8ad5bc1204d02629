"""Scenario 4: node faults while payouts flow.

Replies dropped after successful broadcasts, latency spikes past the client's timeout (the
call happened, the worker did not hear), node restarts that forget in-memory coin locks, and
a 2-block reorg. Each is the node telling the worker less than what happened; none may turn
into a second payment.
"""

from __future__ import annotations

from tests.chaos.harness import FULL, PAYOUTS, ChaosStack, amounts, pause
from tests.chaos.traffic import Producer

PRODUCE_SECONDS = 45 if FULL else 10
# Past PAYOUTS_NODE_TIMEOUT_SECONDS (3 in the chaos stack): calls run, replies come too late.
SPIKE_SECONDS = 4.0
SPIKED_METHODS = ("*", "sendrawtransaction", "fundrawtransaction", "gettransaction")
DROPS, SPIKES, RESTARTS, REORGS = (8, 6, 2, 2) if FULL else (2, 2, 1, 1)


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
    else:
        node.call("devnode_reorg", 2)
    chaos.faults += 1


def test_node_faults_never_pay_twice_and_leave_nothing_unexplained(chaos: ChaosStack) -> None:
    chaos.miner.resume()
    faults = ["drop"] * DROPS + ["spike"] * SPIKES + ["restart"] * RESTARTS + ["reorg"] * REORGS
    chaos.rng.shuffle(faults)
    producer = Producer(chaos.stack, amounts(PAYOUTS), PRODUCE_SECONDS)
    gap = PRODUCE_SECONDS / len(faults)
    for fault in faults:
        pause(chaos.rng, 0.3 * gap, 1.7 * gap)
        _inject(chaos, fault)
    payouts = producer.join()

    summary = chaos.recover_and_judge("node_faults", payouts)

    assert not summary.problems(), f"{summary.line()}\n{summary.problems()}\n{chaos.worker_logs()}"
