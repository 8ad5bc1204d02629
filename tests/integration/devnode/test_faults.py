"""Every devnode_* fault injection, observed through the real client over HTTP."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

import pytest

from cli.regtest_node import RegtestNode
from devnode.server import RunningDevnode
from shared.node.errors import (
    InsufficientFunds,
    InvalidAddress,
    NodeUnavailable,
    TxConflict,
    TxRejected,
)
from tests.integration.devnode.conftest import FOREIGN, pay

COIN = 100_000_000


def wait_until(predicate: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.02)
    raise AssertionError("condition not met before the deadline")


def test_fail_next_returns_the_armed_error_then_recovers(funded: RegtestNode) -> None:
    funded.call("devnode_fail_next", "getbalance", -6, "Insufficient funds", 2)
    for _ in range(2):
        with pytest.raises(InsufficientFunds):
            funded.get_balance_sats()
    assert funded.get_balance_sats() == 50 * COIN
    funded.call("devnode_fail_next", "createrawtransaction", -5, "Invalid Bitcoin address: x")
    with pytest.raises(InvalidAddress):
        funded.create_raw_transaction({FOREIGN: 1000})
    assert funded.create_raw_transaction({FOREIGN: 1000})
    # "*" fails whatever comes next; devnode_* calls are never affected.
    funded.call("devnode_fail_next", "*", -26, "txn-mempool-conflict")
    assert funded.call("devnode_status")["faults"]["fail_next"]["*"]
    with pytest.raises(TxConflict):
        funded.get_block_count()
    funded.call("devnode_fail_next", "getblockcount", -1, "armed", 5)
    funded.call("devnode_clear_faults")
    assert funded.get_block_count() == 101


def test_dropped_reply_after_broadcast_is_unavailable_but_happened(funded: RegtestNode) -> None:
    signed, txid, _ = pay(funded, {FOREIGN: COIN})
    funded.call("devnode_drop_reply", "sendrawtransaction", 1)
    with pytest.raises(NodeUnavailable):
        funded.send_raw_transaction(signed)
    # No retry by the client (it would have succeeded and hidden the drop), yet the node
    # has the transaction: the outcome was unknown, not failed.
    assert funded.call("devnode_status")["faults"]["calls"]["sendrawtransaction"] == 1
    assert funded.get_mempool_entry(txid) is not None
    assert funded.send_raw_transaction(signed) == txid  # the rebroadcast is harmless


def test_read_only_calls_retry_through_a_dropped_reply(devnode: RunningDevnode,
                                                       node: RegtestNode) -> None:
    node.call("devnode_drop_reply", "getblockcount", 1)
    assert node.get_block_count() == 0
    no_retries = RegtestNode(devnode.wallet_url, read_retries=0)
    no_retries.call("devnode_drop_reply", "getblockcount", 1)
    with pytest.raises(NodeUnavailable):
        no_retries.get_block_count()


def test_latency_times_the_client_out_without_blocking_other_calls(
    devnode: RunningDevnode, node: RegtestNode
) -> None:
    node.call("devnode_set_latency", "getnewaddress", 3)
    impatient = RegtestNode(devnode.wallet_url, timeout=0.5)
    with pytest.raises(NodeUnavailable) as caught:
        impatient.get_new_address()
    assert "timed out" in caught.value.message and "***" in caught.value.message
    slow_done = threading.Event()

    def slow() -> None:
        node.get_new_address()
        slow_done.set()

    worker = threading.Thread(target=slow, daemon=True)
    worker.start()
    wait_until(lambda: node.call("devnode_status")["faults"]["calls"]["getnewaddress"] == 2)
    # The slow call is asleep (after running) without the node lock: others go through.
    assert node.get_block_count() == 0 and not slow_done.is_set()
    node.call("devnode_set_latency", "getnewaddress", 0)
    wait_until(slow_done.is_set)
    assert node.call("devnode_status")["faults"]["latency"] == {}


def test_restart_forgets_memory_locks_and_keeps_persistent_ones(funded: RegtestNode) -> None:
    funded.generate_to_address(2, funded.get_new_address())  # three mature coins
    coins = [f"{u['txid']}:{u['vout']}" for u in funded.list_unspent(1)]
    assert len(coins) == 3
    funded.lock_unspent(coins[:1])
    funded.call("lockunspent", False, [{"txid": coins[1][:64], "vout": 0}], True)
    signed, txid, _ = pay(funded, {FOREIGN: COIN})
    funded.send_raw_transaction(signed)
    height = funded.get_block_count()
    funded.call("devnode_restart")
    assert funded.list_lock_unspent() == [coins[1]]
    assert funded.get_block_count() == height
    assert funded.get_mempool_entry(txid) is not None  # mempool.dat survived
    funded.unlock_unspent(coins)  # not-locked ones are fine
    assert funded.list_lock_unspent() == []


def test_reorg_returns_transactions_to_the_mempool(funded: RegtestNode) -> None:
    signed, txid, _ = pay(funded, {FOREIGN: COIN})
    funded.send_raw_transaction(signed)
    funded.generate_to_address(1, funded.get_new_address())
    first = funded.get_transaction(txid)
    assert first is not None and first["confirmations"] == 1
    old_tip = funded.get_best_block_hash()
    height = funded.get_block_count()
    result = funded.call("devnode_reorg", 1, [txid])
    assert result["returned_to_mempool"] == [txid]
    assert funded.get_block_count() == height + 1
    assert funded.call("getblock", old_tip)["confirmations"] == -1
    assert funded.get_transaction(txid)["confirmations"] == 0  # type: ignore[index]
    assert funded.get_mempool_entry(txid) is not None
    removed = funded.list_since_block(old_tip)["removed"]
    # Our payment and the stale block's coinbase (it paid the wallet too).
    assert {e["category"] for e in removed if e["txid"] == txid} == {"send"}
    assert {e["category"] for e in removed if e["txid"] != txid} == {"orphan"}
    # Re-mined by default.
    funded.generate_to_address(1, funded.get_new_address())
    again = funded.get_transaction(txid)
    assert again is not None and again["confirmations"] == 1
    assert again["blockhash"] != first["blockhash"]
    funded.call("devnode_reorg", 2)
    assert funded.get_transaction(txid)["confirmations"] == 3  # type: ignore[index]


def test_double_spend_replaces_and_the_original_is_conflicted(funded: RegtestNode) -> None:
    signed, txid, _ = pay(funded, {FOREIGN: COIN})
    funded.send_raw_transaction(signed)
    thief = funded.call("devnode_double_spend", txid)
    assert thief["replaced"] == [txid]
    assert funded.get_mempool_entry(txid) is None
    assert funded.get_mempool_entry(thief["txid"]) is not None
    with pytest.raises(TxConflict):
        funded.send_raw_transaction(signed)  # cannot outbid the higher-fee replacement
    funded.generate_to_address(1, funded.get_new_address())
    view = funded.get_transaction(txid)
    assert view is not None and view["confirmations"] < 0
    assert thief["txid"] in view["walletconflicts"]
    spent = funded.decode_raw_transaction(signed).inputs[0]
    assert funded.get_tx_out(spent, include_mempool=False) is None
    with pytest.raises(TxRejected):
        funded.send_raw_transaction(signed)
    ledger = funded.call("devnode_ledger")
    assert [(r["txid"], r["address"]) for r in ledger] == [(thief["txid"], thief["address"])]
    assert ledger[0]["confirmations"] == 1


def test_double_spend_to_a_chosen_address(funded: RegtestNode) -> None:
    signed, txid, _ = pay(funded, {FOREIGN: COIN})
    funded.send_raw_transaction(signed)
    target = "bcrt1qq6hag67dl53wl99vzg42z8eyzfz2xlkvwk6f7m"
    thief = funded.call("devnode_double_spend", txid, target)
    assert thief["address"] == target
    assert [r["value_sats"] for r in funded.call("devnode_ledger", target)] == [
        50 * COIN - thief["fee_sats"]]


def test_ledger_is_the_exactly_once_oracle(funded: RegtestNode) -> None:
    mine = funded.get_new_address()
    signed, txid, _ = pay(funded, {FOREIGN: 123_456, mine: 1_000_000})
    funded.send_raw_transaction(signed)
    rows = funded.call("devnode_ledger")
    assert [(r["address"], r["value_sats"], r["confirmations"]) for r in rows] == [
        (FOREIGN, 123_456, 0)]  # only outputs to addresses no wallet owns
    funded.generate_to_address(3, funded.get_new_address())
    rows = funded.call("devnode_ledger", FOREIGN)
    assert rows[0]["txid"] == txid and rows[0]["confirmations"] == 3
    assert funded.call("devnode_ledger", mine)[0]["value_sats"] == 1_000_000


def test_mine_and_fee_estimate_helpers(node: RegtestNode) -> None:
    assert len(node.call("devnode_mine", 101)) == 101
    assert node.get_balance_sats() == 50 * COIN
    assert node.estimate_fee_rate_sat_vb(6) is None
    assert node.call("estimatesmartfee", 6) == {
        "errors": ["Insufficient data or no feerate found"], "blocks": 0}
    node.call("devnode_set_fee_estimate", 7)
    assert node.estimate_fee_rate_sat_vb(6) == 7
    node.call("devnode_set_fee_estimate")
    assert node.estimate_fee_rate_sat_vb(6) is None


def test_connection_refused_is_unavailable_and_redacted() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = RegtestNode(f"http://payouts:s3cret@127.0.0.1:{port}/wallet/hot", read_retries=1)
    with pytest.raises(NodeUnavailable) as caught:
        client.get_block_count()
    assert "s3cret" not in str(caught.value) and "s3cret" not in repr(client)


def _held(node: RegtestNode, method: str, what: str = "held") -> int:
    counts: dict[str, int] = node.call("devnode_status")["faults"][what]
    return counts.get(method, 0)


def test_a_held_call_whose_caller_is_killed_never_runs(
    funded: RegtestNode, devnode: RunningDevnode
) -> None:
    signed, txid, _ = pay(funded, {FOREIGN: COIN})
    funded.call("devnode_hold", "sendrawtransaction", 60, 1)
    sender = subprocess.Popen([sys.executable, "-c", (
        "import sys; from cli.regtest_node import RegtestNode; "
        "RegtestNode(sys.argv[1], timeout=120).send_raw_transaction(sys.argv[2])"
    ), devnode.wallet_url, signed])  # fmt: skip
    try:
        wait_until(lambda: _held(funded, "sendrawtransaction") == 1, 30)
        assert funded.get_mempool_entry(txid) is None  # held before it ran
        sender.send_signal(signal.SIGKILL)
        sender.wait(10)
        wait_until(lambda: _held(funded, "sendrawtransaction", "abandoned") == 1, 10)
        assert funded.get_mempool_entry(txid) is None
        assert funded.call("devnode_status")["faults"]["calls"]["sendrawtransaction"] == 1
    finally:
        sender.kill()
    # Not armed any more: the same bytes are accepted when sent again.
    assert funded.send_raw_transaction(signed) == txid


def test_a_held_call_whose_caller_waits_runs_after_the_hold(funded: RegtestNode) -> None:
    signed, txid, _ = pay(funded, {FOREIGN: COIN})
    funded.call("devnode_hold", "sendrawtransaction", 0.5, 1)
    assert funded.send_raw_transaction(signed) == txid
    assert funded.get_mempool_entry(txid) is not None
    assert _held(funded, "sendrawtransaction") == 1
    assert _held(funded, "sendrawtransaction", "abandoned") == 0
