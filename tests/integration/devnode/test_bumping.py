"""What fee bumping needs from a node: blocks with chosen transactions (`generateblock`),
blocks that leave low-fee transactions out (`devnode_set_mining_min_fee_rate`), and
`bumpfee`/`psbtbumpfee` refusing and accepting exactly where Core 29 does.

Messages marked "captured" were captured from a real Bitcoin Core 29.2 (regtest); the others
are Core 29's text from its source (rpc/mining.cpp generateblock, validation.cpp
CheckBlock/ConnectBlock, consensus/tx_verify.cpp, wallet/feebumper.cpp,
wallet/rpc/spend.cpp)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from cli.regtest_node import RegtestNode
from devnode.txutil import dsha256
from shared.node.errors import NodeError
from tests.integration.devnode.conftest import FOREIGN

COIN = 100_000_000
ZERO_TXID = "00" * 32


def block_of(node: RegtestNode, block_hash: str) -> dict[str, Any]:
    return dict(node.call("getblock", block_hash, 2))


def rpc_error(node: RegtestNode, method: str, *params: Any) -> tuple[int | None, str]:
    with pytest.raises(NodeError) as caught:
        node.call(method, *params)
    return caught.value.code, caught.value.message


def coinbase_outpoint(node: RegtestNode, height: int) -> str:
    coinbase = block_of(node, node.call("getblockhash", height))["tx"][0]
    return f"{coinbase['txid']}:0"


def signed_spend(node: RegtestNode, outpoint: str, value_sats: int) -> str:
    raw = node.create_raw_transaction({FOREIGN: value_sats}, [outpoint])
    return node.sign_raw_transaction_with_wallet(raw)


# ---------------------------------------------------------------- generateblock


def test_generateblock_mines_exactly_the_listed_transactions(funded: RegtestNode) -> None:
    funded.mine()  # a second mature coin, so that the two sends below are independent
    first = funded.send_to_address(FOREIGN, COIN, fee_rate_sat_vb=2)
    second = funded.send_to_address(FOREIGN, COIN, fee_rate_sat_vb=2)
    address = funded.get_new_address()
    mined = funded.generate_block(address, [second])
    assert set(mined) == {"hash"}
    block = block_of(funded, mined["hash"])
    assert [tx["txid"] for tx in block["tx"][1:]] == [second]
    assert funded.get_block_count() == 103 and block["height"] == 103
    # The template comes from an empty mempool: the coinbase pays the subsidy, not the fees.
    assert block["tx"][0]["vout"][0]["value"] == Decimal(50)
    assert block["tx"][0]["vout"][0]["scriptPubKey"]["address"] == address
    # What the block left out stays in the mempool; what it mined is gone from it.
    assert funded.get_mempool_entry(first) is not None
    assert funded.get_mempool_entry(second) is None
    view = funded.get_transaction(second)
    assert view is not None and view["confirmations"] == 1
    # An empty list is an empty block (captured: {"hash": ...}).
    empty = funded.generate_block(address, [])
    assert set(empty) == {"hash"} and len(block_of(funded, empty["hash"])["tx"]) == 1
    # A descriptor works as the output too.
    described = funded.generate_block(f"addr({FOREIGN})", [first])
    coinbase = block_of(funded, described["hash"])["tx"][0]
    assert coinbase["vout"][0]["scriptPubKey"]["address"] == FOREIGN
    assert funded.call("getrawmempool") == []


def test_generateblock_without_submit_connects_nothing(funded: RegtestNode) -> None:
    txid = funded.send_to_address(FOREIGN, COIN, fee_rate_sat_vb=2)
    tip = funded.get_best_block_hash()
    built = funded.generate_block(funded.get_new_address(), [txid], submit=False)
    assert set(built) == {"hash", "hex"}
    header = bytes.fromhex(built["hex"])[:80]
    assert dsha256(header)[::-1].hex() == built["hash"]
    assert header[4:36][::-1].hex() == tip
    assert funded.get_best_block_hash() == tip
    assert funded.get_mempool_entry(txid) is not None
    with pytest.raises(NodeError) as missing:
        funded.call("getblock", built["hash"])
    assert missing.value.code == -5


def test_generateblock_mines_a_replaced_original_by_raw_hex(funded: RegtestNode) -> None:
    original = funded.send_to_address(FOREIGN, COIN, fee_rate_sat_vb=2)
    original_view = funded.get_transaction(original)
    assert original_view is not None
    bump = funded.bump_fee(original, fee_rate_sat_vb=20)["txid"]
    assert funded.get_mempool_entry(original) is None
    # The original is no longer in the mempool, but its raw hex can still be mined; the
    # mempool then drops the bump that conflicts with it.
    mined = funded.generate_block(funded.get_new_address(), [original_view["hex"]])
    assert [tx["txid"] for tx in block_of(funded, mined["hash"])["tx"][1:]] == [original]
    assert funded.get_mempool_entry(bump) is None
    assert funded.call("getrawmempool") == []
    confirmed = funded.get_transaction(original)
    assert confirmed is not None and confirmed["confirmations"] == 1
    # As captured for the original once its bump confirmed, here the other way round.
    replaced = funded.get_transaction(bump)
    assert replaced is not None
    assert (replaced["confirmations"], replaced["walletconflicts"],
            replaced["mempoolconflicts"]) == (-1, [original], [])
    assert [row["txid"] for row in funded.ledger(FOREIGN)] == [original]


def test_generateblock_errors(funded: RegtestNode) -> None:
    address = funded.get_new_address()
    assert rpc_error(funded, "generateblock", "1234", []) == (
        -5, "Error: Invalid address or descriptor")
    assert rpc_error(funded, "generateblock", address, [ZERO_TXID]) == (
        -5, f"Transaction {ZERO_TXID} not in mempool.")
    assert rpc_error(funded, "generateblock", address, ["0000"]) == (
        -22, "Transaction decode failed for 0000. Make sure the tx has at least one input.")
    ranged = ("pkh(tpubD6NzVbkrYhZ4XgiXtGrdW5XDAPFCL9h7we1vwNCpn8tGbBcgfVYjXyhWo4E1xkh56hjod1"
              "RhGjxbaTLV3X4FyWuejifB9jusQ46QzG87VKp/0/*)")
    assert rpc_error(funded, "generateblock", ranged, []) == (
        -8, "Ranged descriptor not accepted. Maybe pass through deriveaddresses first?")

    parent = funded.send_to_address(FOREIGN, COIN, fee_rate_sat_vb=2)
    parent_view = funded.get_transaction(parent)
    assert parent_view is not None
    change = next(f"{c['txid']}:{c['vout']}" for c in funded.list_unspent(0)
                  if c["txid"] == parent)
    child_value = int(next(Decimal(str(c["amount"])) for c in funded.list_unspent(0)
                           if c["txid"] == parent) * COIN)
    child = signed_spend(funded, change, child_value - 1_000)
    child_txid = funded.decode_raw_transaction(child).txid
    # Out of order: the child before its parent (Core's own rpc_generateblock.py case).
    assert rpc_error(funded, "generateblock", address, [child, parent]) == (
        -25, "TestBlockValidity failed: bad-txns-inputs-missingorspent, CheckTxInputs: inputs "
             f"missing/spent in transaction {child_txid}")
    # The same transaction twice spends its inputs twice.
    assert rpc_error(funded, "generateblock", address, [parent, parent_view["hex"]]) == (
        -25, "TestBlockValidity failed: bad-txns-inputs-missingorspent, CheckTxInputs: inputs "
             f"missing/spent in transaction {parent}")
    # A coinbase 99 blocks deep is not spendable in block 102.
    early = signed_spend(funded, coinbase_outpoint(funded, 3), 49 * COIN)
    early_txid = funded.decode_raw_transaction(early).txid
    assert rpc_error(funded, "generateblock", address, [early]) == (
        -25, "TestBlockValidity failed: bad-txns-premature-spend-of-coinbase, tried to spend "
             f"coinbase at depth 99 in transaction {early_txid}")
    # Paying out more than comes in.
    greedy = signed_spend(funded, coinbase_outpoint(funded, 1), 51 * COIN)
    greedy_txid = funded.decode_raw_transaction(greedy).txid
    assert rpc_error(funded, "generateblock", address, [greedy]) == (
        -25, "TestBlockValidity failed: bad-txns-in-belowout, value in (50.00) < value out "
             f"(51.00) in transaction {greedy_txid}")
    # A signature that does not verify.
    good = signed_spend(funded, coinbase_outpoint(funded, 1), 49 * COIN)
    forged = good[:-10] + ("00" if good[-10:-8] != "00" else "01") + good[-8:]
    decoded = funded.call("decoderawtransaction", forged)
    assert rpc_error(funded, "generateblock", address, [forged])[1].startswith(
        "TestBlockValidity failed: mandatory-script-verify-flag-failed (")
    assert rpc_error(funded, "generateblock", address, [forged])[1].endswith(
        f", input 0 of {decoded['txid']} (wtxid {decoded['hash']}), spending "
        f"{coinbase_outpoint(funded, 1)}")
    # Nothing of the above changed the chain or the mempool.
    assert funded.get_block_count() == 101
    assert funded.call("getrawmempool") == [parent]
    funded.generate_block(address, [parent, child])
    # A transaction already in the chain would overwrite its outputs (BIP30).
    assert rpc_error(funded, "generateblock", address, [parent_view["hex"]]) == (
        -25, "TestBlockValidity failed: bad-txns-BIP30, tried to overwrite transaction")


# ---------------------------------------------------------------- fee-aware mining


def mined_txids(node: RegtestNode, block_hash: str) -> list[str]:
    return [tx["txid"] for tx in block_of(node, block_hash)["tx"][1:]]


def change_of(node: RegtestNode, txid: str) -> dict[str, Any]:
    return next(c for c in node.list_unspent(0) if c["txid"] == txid)


def test_blocks_leave_a_parent_below_the_minimum_out(funded: RegtestNode) -> None:
    low = funded.send_to_address(FOREIGN, COIN, fee_rate_sat_vb=2)
    funded.set_mining_min_fee_rate(5)
    assert funded.devnode_status()["mining_min_fee_sat_kvb"] == 5_000
    [empty] = funded.mine()
    assert mined_txids(funded, empty) == []
    assert funded.get_mempool_entry(low) is not None
    # generateblock takes its list as given, whatever the minimum.
    forced = funded.generate_block(funded.get_new_address(), [low])
    assert mined_txids(funded, forced["hash"]) == [low]
    # Without a minimum every block takes everything again.
    again = funded.send_to_address(FOREIGN, COIN, fee_rate_sat_vb=1)
    funded.set_mining_min_fee_rate(None)
    assert funded.devnode_status()["mining_min_fee_sat_kvb"] is None
    [block] = funded.mine()
    assert mined_txids(funded, block) == [again]


def test_a_child_that_pays_for_both_gets_its_parent_mined(funded: RegtestNode) -> None:
    parent = funded.send_to_address(FOREIGN, COIN, fee_rate_sat_vb=2)
    # The wallet's only coin is now the parent's change: each send below spends it.
    stingy = funded.send_to_address(FOREIGN, COIN, fee_rate_sat_vb=5)
    assert (funded.get_mempool_entry(stingy) or {}).get("depends") == [parent]
    funded.set_mining_min_fee_rate(10)
    # 2 and 5 sat/vB together stay below 10: neither is mined (the child cannot be alone).
    [empty] = funded.mine()
    assert mined_txids(funded, empty) == []
    # A child paying about 55 sat/vB for itself lifts the three above 10 sat/vB together:
    # all go in, parents first.
    coin = change_of(funded, stingy)
    value = int(Decimal(str(coin["amount"])) * COIN)
    generous = funded.send_raw_transaction(signed_spend(
        funded, f"{stingy}:{coin['vout']}", value - 6_000))
    entry = funded.get_mempool_entry(generous)
    assert entry is not None and entry["depends"] == [stingy]
    assert Decimal(entry["fees"]["ancestor"]) * COIN / entry["ancestorsize"] > 10
    [block] = funded.mine()
    assert mined_txids(funded, block) == [parent, stingy, generous]
    assert funded.call("getrawmempool") == []


def test_packages_go_in_by_ancestor_score(funded: RegtestNode) -> None:
    funded.mine()  # two mature coins: the sends below are independent
    parent = funded.send_to_address(FOREIGN, COIN, fee_rate_sat_vb=3)
    other = funded.send_to_address(FOREIGN, COIN, fee_rate_sat_vb=8)
    assert (funded.get_mempool_entry(other) or {}).get("depends") == []
    child_coin = change_of(funded, parent)
    value = int(Decimal(str(child_coin["amount"])) * COIN)
    child = funded.send_raw_transaction(signed_spend(
        funded, f"{parent}:{child_coin['vout']}", value - 20_000))  # ~180 sat/vB
    low = funded.send_to_address(FOREIGN, COIN, fee_rate_sat_vb=1)
    funded.set_mining_min_fee_rate(2)
    [block] = funded.mine()
    # parent+child (~90 sat/vB together) before the 8 sat/vB transaction; 1 sat/vB stays.
    assert mined_txids(funded, block) == [parent, child, other]
    assert funded.call("getrawmempool") == [low]


def test_a_replacement_at_a_higher_rate_is_mined_where_the_original_was_not(
    funded: RegtestNode,
) -> None:
    original = funded.send_to_address(FOREIGN, COIN, fee_rate_sat_vb=2)
    funded.set_mining_min_fee_rate(10)
    [block] = funded.mine()
    assert mined_txids(funded, block) == []
    bump = funded.bump_fee(original, fee_rate_sat_vb=20)["txid"]
    [block] = funded.mine()
    assert mined_txids(funded, block) == [bump]
    view = funded.get_transaction(original)
    assert view is not None and view["confirmations"] == -1
    assert [row["txid"] for row in funded.ledger(FOREIGN)] == [bump]


def test_reorg_blocks_leave_low_fee_transactions_out_too(funded: RegtestNode) -> None:
    low = funded.send_to_address(FOREIGN, COIN, fee_rate_sat_vb=2)
    [block] = funded.mine()
    assert mined_txids(funded, block) == [low]
    funded.set_mining_min_fee_rate(5)
    result = funded.reorg(1)
    assert result["returned_to_mempool"] == [low]
    assert all(mined_txids(funded, h) == [] for h in result["new_blocks"])
    assert funded.get_mempool_entry(low) is not None
