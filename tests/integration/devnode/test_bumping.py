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
from devnode.server import RunningDevnode, start_devnode
from devnode.txutil import dsha256, fee_for
from shared.node.errors import NodeError
from tests.integration.devnode.conftest import FOREIGN
from tests.integration.devnode.test_chain_limits import foreign_addresses

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


# ---------------------------------------------------------------- bumpfee / psbtbumpfee

BUMPS = ("bumpfee", "psbtbumpfee")


def money(sats: int) -> str:
    """FormatMoney: 8 decimals, trailing zeros trimmed down to two."""
    text = f"{sats // COIN}.{sats % COIN:08d}"
    while text.endswith("0") and text[-3] != ".":
        text = text[:-1]
    return text


def other_wallet(devnode: RunningDevnode, node: RegtestNode, name: str = "other") -> RegtestNode:
    node.call("createwallet", name)
    return RegtestNode(f"{devnode.url}/wallet/{name}", timeout=10)


def send_unreplaceable(node: RegtestNode, address: str, sats: int) -> str:
    # sendtoaddress … replaceable=false (6th), fee_rate 2 sat/vB (10th).
    return str(node.call("sendtoaddress", address, Decimal(sats) / COIN, "", "", False, False,
                         None, "unset", None, 2))


def test_bump_of_an_unknown_or_malformed_txid(funded: RegtestNode) -> None:
    for method in BUMPS:
        assert rpc_error(funded, method, ZERO_TXID) == (-5, "Invalid or non-wallet transaction id")
        assert rpc_error(funded, method, "abc") == (
            -8, "txid must be of length 64 (not 3, for 'abc')")
        # Options are checked before the wallet looks the txid up.
        assert rpc_error(funded, method, ZERO_TXID, {"totalFee": 1})[0] == -3


def test_bump_option_errors(funded: RegtestNode) -> None:
    txid = funded.send_to_address(FOREIGN, COIN, fee_rate_sat_vb=2)
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"totalFee": 5000}, -3, "Unexpected key totalFee"),
        ({"feeRate": 0.0001}, -3, "Unexpected key feeRate"),
        ({"fee_rate": 20, "conf_target": 6}, -8,
         "Cannot specify both conf_target and fee_rate. Please provide either a confirmation "
         "target in blocks for automatic fee estimation, or an explicit fee rate."),
        ({"fee_rate": 20, "estimate_mode": "economical"}, -8,
         "Cannot specify both estimate_mode and fee_rate"),
        ({"confTarget": 3, "conf_target": 4}, -8,
         "confTarget and conf_target options should not both be set. Use conf_target "
         "(confTarget is deprecated)."),
        ({"estimate_mode": 42}, -3,
         "JSON value of type number for field estimate_mode is not of expected type string"),
        ({"estimate_mode": "sat/B"}, -8,
         'Invalid estimate_mode parameter, must be one of: "unset", "economical", '
         '"conservative"'),
        ({"conf_target": 0}, -8, "Invalid conf_target, must be between 1 and 1008"),
        ({"replaceable": "yes"}, -3,
         "JSON value of type string for field replaceable is not of expected type bool"),
        ({"fee_rate": "1.1111"}, -3, "Invalid amount"),
        ({"fee_rate": 0.0001}, -3, "Invalid amount"),
        ({"fee_rate": -1}, -3, "Amount out of range"),
        ({"fee_rate": True}, -3, "Amount is not a number or string"),
        ({"outputs": []}, -8, "Invalid parameter, output argument cannot be an empty array"),
        ({"outputs": [{FOREIGN: 1}], "original_change_index": 0}, -8,
         "The options 'outputs' and 'original_change_index' are incompatible. You can only "
         "either specify a new set of outputs, or designate a change output to be recycled."),
        # Not simulated (devnode/README.md, known differences).
        ({"outputs": [{FOREIGN: 1}]}, -8, "devnode: the bumpfee option 'outputs' is not supported"),
    ]
    for method in BUMPS:
        for options, code, message in cases:
            assert rpc_error(funded, method, txid, options) == (code, message), options
    assert funded.get_mempool_entry(txid) is not None  # nothing happened


def test_bump_with_descendants_in_the_wallet_unless_abandoned(funded: RegtestNode) -> None:
    parent = funded.send_to_address(FOREIGN, COIN, fee_rate_sat_vb=2)
    child = funded.send_to_address(FOREIGN, COIN, fee_rate_sat_vb=2)  # spends parent's change
    for method in BUMPS:
        assert rpc_error(funded, method, parent, {"fee_rate": 20}) == (  # captured
            -8, "Transaction has descendants in the wallet")
    # Out of the mempool but not abandoned: the wallet still counts the child's spend.
    funded.evict(child)
    assert rpc_error(funded, "psbtbumpfee", parent, {"fee_rate": 20}) == (
        -8, "Transaction has descendants in the wallet")
    funded.abandon_transaction(child)
    bumped = funded.bump_fee(parent, fee_rate_sat_vb=20)
    assert funded.get_mempool_entry(bumped["txid"]) is not None


def test_bump_with_descendants_in_the_mempool_only(devnode: RunningDevnode,
                                                   funded: RegtestNode) -> None:
    other = other_wallet(devnode, funded)
    theirs = other.get_new_address()
    parent = funded.send_to_address(theirs, COIN, fee_rate_sat_vb=2)
    vout = next(o.n for o in funded.decode_raw_transaction(
        (funded.get_transaction(parent) or {})["hex"]).outputs if o.address == theirs)
    raw = other.create_raw_transaction({FOREIGN: COIN - 1_000}, [f"{parent}:{vout}"])
    other.send_raw_transaction(other.sign_raw_transaction_with_wallet(raw))
    for method in BUMPS:
        assert rpc_error(funded, method, parent, {"fee_rate": 20}) == (
            -8, "Transaction has descendants in the mempool")


def test_bump_of_a_mined_or_conflicted_transaction(funded: RegtestNode) -> None:
    # Core looks the original's coins up first: once mined they are spent, so it never
    # reaches "Transaction has been mined..." (wallet_bumpfee.py test_bumpfee_already_spent).
    mined = funded.send_to_address(FOREIGN, COIN, fee_rate_sat_vb=2)
    spent = funded.decode_raw_transaction((funded.get_transaction(mined) or {})["hex"]).inputs[0]
    funded.mine()
    for method in BUMPS:
        assert rpc_error(funded, method, mined, {"fee_rate": 20}) == (
            -1, f"{spent} is already spent")
    conflicted = funded.send_to_address(FOREIGN, COIN, fee_rate_sat_vb=2)
    spent = funded.decode_raw_transaction(
        (funded.get_transaction(conflicted) or {})["hex"]).inputs[0]
    funded.double_spend(conflicted)
    funded.mine()
    view = funded.get_transaction(conflicted)
    assert view is not None and view["confirmations"] < 0
    for method in BUMPS:
        assert rpc_error(funded, method, conflicted) == (-1, f"{spent} is already spent")


def test_bump_of_a_transaction_that_does_not_signal(funded: RegtestNode) -> None:
    txid = send_unreplaceable(funded, FOREIGN, COIN)
    for method in BUMPS:
        assert rpc_error(funded, method, txid, {"fee_rate": 20}) == (
            -4, "Transaction is not BIP 125 replaceable")
    # A bump asked to be unreplaceable cannot be bumped again (wallet_bumpfee.py).
    signalling = funded.send_to_address(FOREIGN, COIN, fee_rate_sat_vb=2)
    bumped = funded.call("bumpfee", signalling, {"fee_rate": 10, "replaceable": False})
    raw = (funded.get_transaction(bumped["txid"]) or {})["hex"]
    assert {i["sequence"] for i in funded.call("decoderawtransaction", raw)["vin"]} == {
        0xFFFFFFFE}
    assert rpc_error(funded, "bumpfee", bumped["txid"], {"fee_rate": 20}) == (
        -4, "Transaction is not BIP 125 replaceable")


def test_bump_of_an_already_bumped_transaction(funded: RegtestNode) -> None:
    original = funded.send_to_address(FOREIGN, COIN, fee_rate_sat_vb=2)
    bump = funded.bump_fee(original, fee_rate_sat_vb=10)["txid"]
    for method in BUMPS:
        assert rpc_error(funded, method, original, {"fee_rate": 20}) == (
            -4, f"Cannot bump transaction {original} which was already bumped by transaction "
                f"{bump}")
    again = funded.bump_fee(bump, fee_rate_sat_vb=20)  # the newest version can be bumped
    view = funded.get_transaction(again["txid"])
    assert view is not None and view["replaces_txid"] == bump


def test_a_psbt_bump_sent_by_hand_does_not_mark_the_original(funded: RegtestNode) -> None:
    # Only bumpfee's CommitTransaction marks the original (replaced_by_txid); a replacement
    # sent with sendrawtransaction does not, so the original can be bumped again.
    original = funded.send_to_address(FOREIGN, COIN, fee_rate_sat_vb=2)
    first = funded.psbt_bump_fee(original, fee_rate_sat_vb=10)
    first_txid = funded.send_raw_transaction(funded.sign_psbt_with_wallet(first.psbt))
    view = funded.get_transaction(original)
    assert view is not None and "replaced_by_txid" not in view
    assert view["mempoolconflicts"] == [first_txid]
    second = funded.psbt_bump_fee(original, fee_rate_sat_vb=30)
    assert second.old_fee_sats == 282
    second_txid = funded.send_raw_transaction(funded.sign_psbt_with_wallet(second.psbt))
    assert funded.get_mempool_entry(first_txid) is None
    assert funded.get_mempool_entry(second_txid) is not None


def test_bump_of_a_transaction_with_inputs_from_another_wallet(devnode: RunningDevnode,
                                                               funded: RegtestNode) -> None:
    other = other_wallet(devnode, funded)
    funded.send_to_address(other.get_new_address(), COIN, fee_rate_sat_vb=2)
    funded.mine()
    ours = max(funded.list_unspent(1), key=lambda c: Decimal(str(c["amount"])))
    [theirs] = other.list_unspent(1)
    total = int((Decimal(str(ours["amount"])) + Decimal(str(theirs["amount"]))) * COIN)
    inputs = [{"txid": c["txid"], "vout": c["vout"]} for c in (ours, theirs)]
    change = funded.call("getrawchangeaddress")
    raw = funded.call("createrawtransaction", inputs,
                      {FOREIGN: Decimal(COIN) / COIN, change: Decimal(total - COIN - 1_000) / COIN},
                      0, True)
    half = funded.call("signrawtransactionwithwallet", raw)
    assert half["complete"] is False
    signed = other.call("signrawtransactionwithwallet", half["hex"])
    assert signed["complete"] is True
    txid = funded.send_raw_transaction(signed["hex"])
    assert rpc_error(funded, "bumpfee", txid, {"fee_rate": 20}) == (
        -4, "Transaction contains inputs that don't belong to this wallet")
    # psbtbumpfee takes them (require_mine=false): the other wallet signs its own input.
    bumped = funded.call("psbtbumpfee", txid, {"fee_rate": 20})
    assert (bumped["origfee"], bumped["errors"]) == (Decimal("0.00001000"), [])
    processed = funded.call("walletprocesspsbt", bumped["psbt"])
    assert processed["complete"] is False and "hex" not in processed
    final = other.call("walletprocesspsbt", processed["psbt"])
    assert final["complete"] is True
    assert funded.send_raw_transaction(final["hex"]) == funded.decode_raw_transaction(
        final["hex"]).txid
    assert funded.get_mempool_entry(txid) is None


def test_explicit_fee_rate_checks(devnode: RunningDevnode, funded: RegtestNode) -> None:
    # 1 P2WPKH input, 2 P2WPKH outputs: 141 vB as the wallet sizes it; 282 sats at 2 sat/vB.
    txid = funded.send_to_address(FOREIGN, COIN, fee_rate_sat_vb=2)
    view = funded.get_transaction(txid)
    assert view is not None and view["fee"] == Decimal("-0.00000282")
    for method in BUMPS:
        # Core 29: at least the old fee plus the node's incremental relay fee (1 sat/vB) on
        # the original's size; the wallet's 5 sat/vB only applies without fee_rate.
        assert rpc_error(funded, method, txid, {"fee_rate": 2}) == (
            -8, "Insufficient total fee 0.00000282, must be at least 0.00000423 (oldFee "
                "0.00000282 + incrementalFee 0.00000141)")
        assert rpc_error(funded, method, txid, {"fee_rate": 0}) == (
            -8, "Insufficient total fee 0.00, must be at least 0.00000423 (oldFee 0.00000282 + "
                "incrementalFee 0.00000141)")
        # -maxtxfee (0.10 BTC) against the rate on the original's size (wallet_bumpfee.py).
        assert rpc_error(funded, method, txid, {"fee_rate": 100_000}) == (
            -4, "Specified or calculated fee 0.141 is too high (cannot be higher than -maxtxfee "
                "0.10)")
        # A mempool whose rolling minimum fee went up (the devnode's never fills: white-box).
        devnode.node.mempool_min_fee_sat_kvb = 50_000
        try:
            assert rpc_error(funded, method, txid, {"fee_rate": 20}) == (
                -4, "New fee rate (0.0002) is lower than the minimum fee rate (0.0005) to get "
                    "into the mempool -- ")
        finally:
            devnode.node.mempool_min_fee_sat_kvb = 0
    # Exactly old fee + 1 sat/vB is enough, and the mempool takes it (BIP125 rule 4).
    bumped = funded.bump_fee(txid, fee_rate_sat_vb=3)
    assert bumped["origfee"] == Decimal("0.00000282") and bumped["fee"] == Decimal("0.00000423")
    assert funded.get_mempool_entry(bumped["txid"]) is not None


def test_bump_without_a_fee_rate_adds_the_wallet_increment() -> None:
    # No estimate and no fallback fee: Core still bumps, at the old rate + 1 sat/kvB + the
    # wallet's 5 sat/vB increment (EstimateFeeRate), never failing fee estimation.
    with start_devnode(fallback_fee_sat_kvb=0) as running:
        node = RegtestNode(running.wallet_url, timeout=10)
        node.generate_to_address(101, node.get_new_address())
        txid = node.send_to_address(FOREIGN, COIN, fee_rate_sat_vb=2)
        entry = node.get_mempool_entry(txid)
        assert entry is not None  # 282 sats on 141 vB (140 with a 70-byte signature)
        bumped = node.bump_fee(txid)
        # The old rate rounded down, + 1 sat/kvB + 5 sat/vB: ceil(7.001 sat/vB * 141 vB).
        rate = 282_000 // entry["vsize"] + 1 + 5_000
        assert int(bumped["fee"] * COIN) == fee_for(rate, 141) and rate >= 7_001
        node.set_fee_estimate(30)  # an estimate above that wins (GetMinimumFeeRate)
        again = node.bump_fee(bumped["txid"])
        assert again["fee"] == Decimal("0.00004230")


def test_psbtbumpfee_keeps_every_input_and_output(funded: RegtestNode) -> None:
    funded.mine(2)  # three mature 50 BTC coins, all needed below
    recipients = {a: 40 * COIN + i for i, a in enumerate(foreign_addresses(3, "bump"))}
    txid = funded.send_many(recipients, fee_rate_sat_vb=2)
    original = funded.decode_raw_transaction((funded.get_transaction(txid) or {})["hex"])
    assert len(original.inputs) == 3 and len(original.outputs) == 4
    bumped = funded.call("psbtbumpfee", txid, {"fee_rate": 20})
    decoded = funded.decode_psbt(bumped["psbt"])
    tx = decoded["tx"]
    assert {f"{i['txid']}:{i['vout']}" for i in tx["vin"]} == set(original.inputs)
    assert {i["sequence"] for i in tx["vin"]} == {0xFFFFFFFD}
    assert tx["locktime"] == funded.get_block_count()  # anti-fee-sniping, as captured
    outputs = {o["scriptPubKey"]["address"]: int(o["value"] * COIN) for o in tx["vout"]}
    assert len(outputs) == 4
    for address, sats in recipients.items():
        assert outputs.pop(address) == sats
    [(change_address, change)] = outputs.items()
    [old_change] = [o for o in original.outputs if o.address == change_address]
    new_fee = int(bumped["fee"] * COIN)
    old_fee = int(bumped["origfee"] * COIN)
    assert change == old_change.value_sats - (new_fee - old_fee)
    processed = funded.call("walletprocesspsbt", bumped["psbt"])
    assert processed["complete"] is True and processed["hex"]
    bump_txid = funded.send_raw_transaction(processed["hex"])
    entry = funded.get_mempool_entry(bump_txid)
    assert entry is not None and new_fee == fee_for(20_000, entry["vsize"])
    assert funded.get_mempool_entry(txid) is None
