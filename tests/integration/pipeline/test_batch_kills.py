"""kill -9 of the workers in the middle of a batch, judged by the node's ledger.

Real Celery worker processes, PostgreSQL, Redis and the simulated node over HTTP. The node
holds one RPC of the batch (`devnode_hold`) so the test kills the workers at exactly that
point: between the batch's claim and its persist (holding the signing call), or between its
persist and its broadcast (holding `sendrawtransaction`). A held call whose caller died never
runs, as if the worker had died just before sending it. A new worker then takes over.
"""

from __future__ import annotations

from typing import Any

import pytest

from cli.ledger import judge
from cli.processes import wait_until
from tests.integration.pipeline.conftest import simulated_node_only
from tests.support.stack import Stack

BATCH = 4


@pytest.fixture(scope="module")
def stack_settings() -> dict[str, str]:
    # A window long enough that the four approvals below form one batch; a node timeout
    # longer than the hold, so the held worker is still waiting when it is killed.
    return {"auto_max_sats": "1000000", "batch_window_seconds": "3", "node_timeout_seconds": "90"}


def _faults(stack: Stack, what: str, method: str) -> int:
    counts: dict[str, int] = stack.node.call("devnode_status")["faults"][what]
    return counts.get(method, 0)


def _approve_batch(stack: Stack, base_sats: int) -> list[dict[str, Any]]:
    return [stack.create_and_approve(base_sats + i) for i in range(BATCH)]


def _kill_workers_while_held(stack: Stack, method: str) -> None:
    """Wait for the batch to reach the held call, kill -9 every worker, and check the node
    never ran the call."""
    held_before = _faults(stack, "held", method)
    abandoned_before = _faults(stack, "abandoned", method)
    stack.node.call("devnode_hold", method, 80, 1)
    wait_until(
        lambda: _faults(stack, "held", method) == held_before + 1, 60, f"a worker at {method}"
    )
    for worker in stack.workers:
        worker.kill9()
    wait_until(
        lambda: _faults(stack, "abandoned", method) == abandoned_before + 1, 20,
        f"the held {method} to be abandoned",
    )  # fmt: skip


def _confirm_and_judge(stack: Stack, payouts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    ids = [p["id"] for p in payouts]
    stack.wait_for_states(ids, {"broadcast", "confirmed"}, timeout=120)
    stack.node.generate_to_address(1, stack.node.get_new_address())
    stack.wait_for_states(ids, {"confirmed"}, timeout=60)
    verdict = judge(stack.node, {p["id"]: (p["destination"], p["amount_sats"]) for p in payouts})
    assert sorted(verdict.paid_once) == sorted(ids)
    assert verdict.paid_twice == [] and verdict.unpaid == []
    return [stack.payout(payout_id) for payout_id in ids]


def test_kill_between_the_batch_claim_and_its_persist_pays_each_payout_once(
    stack: Stack,
) -> None:
    simulated_node_only()
    payouts = _approve_batch(stack, 61_000)
    _kill_workers_while_held(stack, "signrawtransactionwithwallet")

    stalled = [stack.payout(p["id"]) for p in payouts]
    assert {v["state"] for v in stalled} == {"claimed"}  # claimed, funded, never persisted
    assert {v["txid"] for v in stalled} == {None}
    assert len({v["claimed_by"] for v in stalled}) == 1  # one batch, one holder
    dead_holder = stalled[0]["claimed_by"]

    stack.start_worker()  # takes the batch over once its lease runs out
    paid = _confirm_and_judge(stack, payouts)
    assert len({v["txid"] for v in paid}) == 1  # still one transaction for the batch
    assert {v["claimed_by"] for v in paid} != {dead_holder}


def test_kill_between_the_batch_persist_and_its_broadcast_sends_the_persisted_bytes(
    stack: Stack,
) -> None:
    simulated_node_only()
    payouts = _approve_batch(stack, 71_000)
    _kill_workers_while_held(stack, "sendrawtransaction")

    stalled = [stack.payout(p["id"]) for p in payouts]
    assert {v["state"] for v in stalled} == {"signed"}  # persisted, never sent
    (persisted_txid,) = {v["txid"] for v in stalled}
    assert stack.node.get_mempool_entry(persisted_txid) is None

    stack.start_worker()  # the rebroadcast job sends what was persisted; nothing is rebuilt
    paid = _confirm_and_judge(stack, payouts)
    assert {v["txid"] for v in paid} == {persisted_txid}
    assert sorted(v["vout"] for v in paid) == sorted(v["vout"] for v in stalled)
