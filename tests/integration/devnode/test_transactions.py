"""Real transactions: building, signing, mempool rules, confirmation, replacement."""

from __future__ import annotations

import pytest

from cli.regtest_node import RegtestNode
from shared.node.errors import (
    AlreadyKnown,
    FeeTooHigh,
    InputsMissingOrSpent,
    InsufficientFunds,
    TxConflict,
    TxRejected,
)
from tests.integration.devnode.conftest import (
    FOREIGN,
    independent_decode,
    pay,
    verify_signatures_independently,
)

COIN = 100_000_000


def test_worker_path_end_to_end_with_independent_decoding(funded: RegtestNode) -> None:
    raw = funded.create_raw_transaction({FOREIGN: 150_000_000})
    built = funded.fund_raw_transaction(raw, fee_rate_sat_vb=5)
    locked = funded.list_lock_unspent()
    assert len(locked) == 1  # lockUnspents locked the one selected coin
    signed = funded.sign_raw_transaction_with_wallet(built.hex)
    ours = funded.decode_raw_transaction(signed)
    theirs = independent_decode(signed)
    assert ours.txid == theirs["txid"] and ours.vsize == theirs["vsize"]
    assert ours.inputs == theirs["inputs"] == locked
    assert [(o.address, o.value_sats, o.n) for o in ours.outputs] == theirs["outputs"]
    assert theirs["wtxid"] != theirs["txid"]  # segwit: witness data changes the wtxid
    spent = funded.get_tx_out(ours.inputs[0])
    assert spent is not None
    verify_signatures_independently(
        signed, [(50 * COIN, spent["scriptPubKey"]["hex"])])
    # The fee is inputs minus outputs, and pays at least the asked rate on the signed size.
    assert built.fee_sats == 50 * COIN - sum(o.value_sats for o in ours.outputs)
    assert built.fee_sats >= 5 * ours.vsize
    change = [o for o in ours.outputs if o.n == built.change_position]
    assert change and funded.get_address_info(change[0].address or "")["ischange"]

    txid = funded.send_raw_transaction(signed)
    assert txid == ours.txid
    entry = funded.get_mempool_entry(txid)
    assert entry is not None and entry["vsize"] == ours.vsize
    assert funded.list_lock_unspent() == []  # a wallet spend releases its locks
    wallet_view = funded.get_transaction(txid)
    assert wallet_view is not None and wallet_view["confirmations"] == 0
    funded.generate_to_address(2, funded.get_new_address())
    assert funded.get_mempool_entry(txid) is None
    wallet_view = funded.get_transaction(txid)
    assert wallet_view is not None and wallet_view["confirmations"] == 2
    raw_view = funded.get_raw_transaction(txid)
    assert raw_view is not None and raw_view["confirmations"] == 2
    assert raw_view["blockhash"] == wallet_view["blockhash"]
    block = funded.call("getblock", wallet_view["blockhash"], 2)
    assert block["tx"][1]["txid"] == txid
    assert independent_decode(block["tx"][0]["hex"])["txid"] == block["tx"][0]["txid"]


def test_resending_follows_bitcoind(funded: RegtestNode) -> None:
    signed, txid, _ = pay(funded, {FOREIGN: 10_000_000})
    assert funded.send_raw_transaction(signed) == txid
    assert funded.send_raw_transaction(signed) == txid  # in mempool: same txid, no 2nd spend
    assert funded.test_mempool_accept(signed)["reject-reason"] == "txn-already-in-mempool"
    funded.generate_to_address(1, funded.get_new_address())
    with pytest.raises(AlreadyKnown) as caught:
        funded.send_raw_transaction(signed)
    # Captured from Bitcoin Core 29.2.
    assert (caught.value.code, caught.value.message) == (
        -27, "Transaction outputs already in utxo set")
    assert len([r for r in funded.call("devnode_ledger", FOREIGN)]) == 1


def test_resending_after_all_outputs_were_spent_reports_missing_inputs(funded: RegtestNode) -> (
    None
):
    # Like bitcoind: once a confirmed tx's outputs are all spent, the node cannot tell a
    # resend from a double spend and reports missing inputs.
    address = funded.get_new_address()
    txid = funded.send_to_address(address, 10 * COIN)
    raw = funded.get_raw_transaction(txid)
    assert raw is not None
    funded.generate_to_address(1, funded.get_new_address())
    everything = funded.get_balance_sats()
    funded.call("sendtoaddress", FOREIGN, str(everything / COIN), "", "", True)
    funded.generate_to_address(1, funded.get_new_address())
    with pytest.raises(InputsMissingOrSpent) as caught:
        funded.send_raw_transaction(raw["hex"])
    assert caught.value.code == -25


def test_conflicts_and_replacement(funded: RegtestNode) -> None:
    first, first_txid, first_fee = pay(funded, {FOREIGN: 10_000_000}, fee_rate=3)
    funded.send_raw_transaction(first)
    inputs = funded.decode_raw_transaction(first).inputs
    # Same input, same fee rate: a replacement must pay more, so it is a conflict.
    cheap = funded.sign_raw_transaction_with_wallet(funded.fund_raw_transaction(
        funded.create_raw_transaction({FOREIGN: 20_000_000}, inputs), fee_rate_sat_vb=3,
        add_inputs=False).hex)
    with pytest.raises(TxConflict) as caught:
        funded.send_raw_transaction(cheap)
    # Core 29's wording, as captured: "...replacement <new txid>; new feerate <= old".
    cheap_view = funded.decode_raw_transaction(cheap)
    first_view = funded.decode_raw_transaction(first)
    cheap_fee = 50 * COIN - sum(o.value_sats for o in cheap_view.outputs)
    new_rate = cheap_fee * 1000 // cheap_view.vsize
    old_rate = first_fee * 1000 // first_view.vsize
    assert (caught.value.code, caught.value.message) == (
        -26, f"insufficient fee, rejecting replacement {cheap_view.txid}; new feerate "
             f"0.{new_rate:08d} BTC/kvB <= old feerate 0.{old_rate:08d} BTC/kvB")
    verdict = funded.test_mempool_accept(cheap)
    assert verdict["reject-reason"] == "insufficient fee"
    assert verdict["reject-details"] == caught.value.message
    # Paying enough more replaces it (full RBF, BIP125 rules 3, 4 and 6).
    rich = funded.sign_raw_transaction_with_wallet(funded.fund_raw_transaction(
        funded.create_raw_transaction({FOREIGN: 20_000_000}, inputs), fee_rate_sat_vb=10,
        add_inputs=False).hex)
    rich_txid = funded.send_raw_transaction(rich)
    assert funded.get_mempool_entry(first_txid) is None
    assert funded.get_mempool_entry(rich_txid) is not None
    original = funded.get_transaction(first_txid)
    assert original is not None and rich_txid in original["walletconflicts"]
    funded.generate_to_address(1, funded.get_new_address())
    original = funded.get_transaction(first_txid)
    assert original is not None and original["confirmations"] == -1
    with pytest.raises(InputsMissingOrSpent):
        funded.send_raw_transaction(first)
    assert first_fee > 0


def test_no_full_rbf_node_reports_mempool_conflict() -> None:
    from devnode.server import start_devnode

    with start_devnode(port=0, full_rbf=False) as dn:
        node = RegtestNode(dn.wallet_url)
        node.generate_to_address(101, node.get_new_address())
        raw = node.create_raw_transaction({FOREIGN: 10_000_000})
        first = node.sign_raw_transaction_with_wallet(node.fund_raw_transaction(
            raw, fee_rate_sat_vb=2, replaceable=False).hex)
        node.send_raw_transaction(first)
        inputs = node.decode_raw_transaction(first).inputs
        second = node.sign_raw_transaction_with_wallet(node.fund_raw_transaction(
            node.create_raw_transaction({FOREIGN: 20_000_000}, inputs), fee_rate_sat_vb=50,
            add_inputs=False).hex)
        with pytest.raises(TxConflict) as caught:
            node.send_raw_transaction(second)
        assert caught.value.message == "txn-mempool-conflict" and caught.value.code == -26


def test_unsigned_and_badly_signed_transactions_are_rejected(funded: RegtestNode) -> None:
    built = funded.fund_raw_transaction(funded.create_raw_transaction({FOREIGN: 10_000_000}),
                                        fee_rate_sat_vb=2)
    with pytest.raises(TxRejected) as unsigned:
        funded.send_raw_transaction(built.hex)
    assert "mandatory-script-verify-flag-failed" in unsigned.value.message
    signed = funded.sign_raw_transaction_with_wallet(built.hex)
    # Pay 1 sat more to the recipient after signing: the signature no longer matches.
    tampered = signed.replace((10_000_000).to_bytes(8, "little").hex(),
                              (10_000_001).to_bytes(8, "little").hex())
    assert tampered != signed
    with pytest.raises(TxRejected) as bad:
        funded.send_raw_transaction(tampered)
    assert "mandatory-script-verify-flag-failed" in bad.value.message
    assert funded.test_mempool_accept(signed)["allowed"] is True


def test_immature_coinbase_cannot_be_spent(node: RegtestNode) -> None:
    address = node.get_new_address()
    # A coinbase can go into a block 100 deeper than its own: at depth 99 it cannot enter
    # the mempool yet (it would be in block 100).
    node.generate_to_address(99, address)
    coinbase_txid = node.call("getblock", node.call("getblockhash", 1))["tx"][0]
    raw = node.create_raw_transaction({FOREIGN: 50 * COIN - 10_000}, [f"{coinbase_txid}:0"])
    signed = node.sign_raw_transaction_with_wallet(raw)
    with pytest.raises(TxRejected) as caught:
        node.send_raw_transaction(signed)
    assert "bad-txns-premature-spend-of-coinbase" in caught.value.message
    assert node.get_balance_sats() == 0
    with pytest.raises(InsufficientFunds):
        node.fund_raw_transaction(node.create_raw_transaction({FOREIGN: COIN}),
                                  fee_rate_sat_vb=1)
    node.generate_to_address(1, address)
    # Depth 100: the mempool takes the spend, but the wallet itself waits for depth 101
    # before counting a coinbase as spendable, like bitcoind's wallet.
    assert node.get_balance_sats() == 0
    assert node.send_raw_transaction(signed)
    node.generate_to_address(2, address)
    assert node.get_balance_sats() == 50 * COIN  # block 2's coinbase, now at depth 101


def test_insufficient_funds_and_max_fee(funded: RegtestNode) -> None:
    with pytest.raises(InsufficientFunds) as fund_error:
        funded.fund_raw_transaction(funded.create_raw_transaction({FOREIGN: 60 * COIN}),
                                    fee_rate_sat_vb=1)
    assert fund_error.value.code == -4  # fundrawtransaction reports it as a wallet error
    with pytest.raises(InsufficientFunds) as send_error:
        funded.send_to_address(FOREIGN, 60 * COIN)
    assert send_error.value.code == -6
    signed, _, fee = pay(funded, {FOREIGN: 10_000_000}, fee_rate=500)
    with pytest.raises(FeeTooHigh) as too_high:  # maxfeerate 0.001 BTC/kvB
        funded.send_raw_transaction(signed, max_fee_rate_sat_vb=100)
    assert (too_high.value.code, too_high.value.message) == (  # captured from Core 29.2
        -25, "Fee exceeds maximum configured by user (e.g. -maxtxfee, maxfeerate)")
    [verdict] = funded.call("testmempoolaccept", [signed], "0.001")
    assert (verdict["allowed"], verdict["reject-reason"]) == (False, "max-fee-exceeded")
    assert funded.test_mempool_accept(signed)["allowed"]  # the default maxfeerate is 0.1
    assert funded.send_raw_transaction(signed, max_fee_rate_sat_vb=600)
    assert fee > 0


def test_spending_an_unknown_outpoint(funded: RegtestNode) -> None:
    raw = funded.create_raw_transaction({FOREIGN: 10_000}, ["11" * 32 + ":0"])  # unsigned
    with pytest.raises(InputsMissingOrSpent) as caught:
        funded.send_raw_transaction(raw)
    assert (caught.value.code, caught.value.message) == (  # captured from Core 29.2
        -25, "bad-txns-inputs-missingorspent")
    verdict = funded.test_mempool_accept(raw)
    assert verdict == {"txid": verdict["txid"], "wtxid": verdict["wtxid"], "allowed": False,
                       "reject-reason": "missing-inputs"}


def test_unconfirmed_change_is_spent_only_when_needed(funded: RegtestNode) -> None:
    first = funded.send_to_address(FOREIGN, 10 * COIN)
    # The only mature coin is now unconfirmed change: the wallet may use it, like Core.
    signed, second, _ = pay(funded, {FOREIGN: 5 * COIN})
    assert funded.decode_raw_transaction(signed).inputs[0].startswith(first)
    funded.send_raw_transaction(signed)
    assert funded.get_mempool_entry(second)["depends"] == [first]  # type: ignore[index]
    funded.generate_to_address(1, funded.get_new_address())
    # With a confirmed coin available (block 2's coinbase matured) it is preferred.
    signed, _, _ = pay(funded, {FOREIGN: COIN})
    funded.send_raw_transaction(signed)
    signed_next, _, _ = pay(funded, {FOREIGN: COIN})
    unconfirmed = {u["txid"] for u in funded.list_unspent(0) if u["confirmations"] == 0}
    chosen = funded.decode_raw_transaction(signed_next).inputs
    assert not any(op.split(":")[0] in unconfirmed for op in chosen)


def test_sendmany_fans_out_and_subtract_fee(funded: RegtestNode) -> None:
    targets = {funded.get_new_address(): 1_000_000 for _ in range(20)}
    txid = funded.send_many(targets)
    funded.generate_to_address(1, funded.get_new_address())
    coins = [u for u in funded.list_unspent(1) if u["txid"] == txid]
    assert len(coins) == 21  # 20 recipients + change
    raw = funded.create_raw_transaction({FOREIGN: 500_000})
    result = funded.call("fundrawtransaction", raw, {"fee_rate": 2,
                                                     "subtractFeeFromOutputs": [0]})
    decoded = funded.decode_raw_transaction(result["hex"])
    paid = [o for o in decoded.outputs if o.address == FOREIGN][0]
    assert paid.value_sats == 500_000 - int(result["fee"] * COIN)


def test_legacy_and_wrapped_segwit_coins_are_spendable(funded: RegtestNode) -> None:
    legacy = funded.get_new_address("legacy")
    wrapped = funded.get_new_address("p2sh-segwit")
    funded.send_many({legacy: 2 * COIN, wrapped: 3 * COIN})
    funded.generate_to_address(1, funded.get_new_address())
    coins = [u for u in funded.list_unspent(1) if u["address"] in (legacy, wrapped)]
    assert len(coins) == 2
    raw = funded.create_raw_transaction({FOREIGN: 4 * COIN},
                                        [f"{c['txid']}:{c['vout']}" for c in coins])
    built = funded.fund_raw_transaction(raw, fee_rate_sat_vb=3, add_inputs=False)
    signed = funded.sign_raw_transaction_with_wallet(built.hex)
    assert independent_decode(signed)["txid"] == funded.send_raw_transaction(signed)
    legacy_coin = [c for c in coins if c["address"] == legacy][0]
    index = funded.decode_raw_transaction(signed).inputs.index(
        f"{legacy_coin['txid']}:{legacy_coin['vout']}")
    decoded = independent_decode(signed)["tx"]
    assert len(decoded.vin[index].scriptSig) > 100  # legacy: signature in the scriptSig


def test_psbt_flow(funded: RegtestNode) -> None:
    created = funded.wallet_create_funded_psbt({FOREIGN: 10_000_000}, fee_rate_sat_vb=4)
    decoded = funded.decode_psbt(created.psbt)
    assert int(decoded["fee"] * COIN) == created.fee_sats
    assert decoded["inputs"][0]["witness_utxo"]["amount"] == 50
    assert len(funded.list_lock_unspent()) == 1
    unsigned_hex, complete = funded.finalize_psbt(created.psbt)
    assert (unsigned_hex, complete) == (None, False)
    processed, complete = funded.wallet_process_psbt(created.psbt)
    assert complete
    final_hex, complete = funded.finalize_psbt(processed)
    assert complete and final_hex
    txid = funded.send_raw_transaction(final_hex)
    assert independent_decode(final_hex)["txid"] == txid


def test_bumpfee_replaces_with_a_higher_fee(funded: RegtestNode) -> None:
    txid = funded.send_to_address(FOREIGN, COIN, fee_rate_sat_vb=2)
    bumped = funded.bump_fee(txid, fee_rate_sat_vb=20)
    assert funded.get_mempool_entry(txid) is None
    new = funded.get_mempool_entry(bumped["txid"])
    assert new is not None and bumped["fee"] > bumped["origfee"]
    old_view = funded.get_transaction(txid)
    assert old_view is not None and old_view["replaced_by_txid"] == bumped["txid"]
    ledger = funded.call("devnode_ledger", FOREIGN)
    assert [row["txid"] for row in ledger] == [bumped["txid"]]


def test_abandon_frees_the_coins_of_a_dropped_transaction(funded: RegtestNode) -> None:
    signed, txid, _ = pay(funded, {FOREIGN: COIN})
    funded.send_raw_transaction(signed)
    assert funded.get_balance_sats() < 50 * COIN - COIN
    evicted = funded.call("devnode_evict", txid)
    assert evicted == [txid]
    # Gone from the mempool but not abandoned: the wallet still counts its inputs as spent.
    with pytest.raises(InsufficientFunds):
        funded.fund_raw_transaction(funded.create_raw_transaction({FOREIGN: 2 * COIN}),
                                    fee_rate_sat_vb=1)
    funded.abandon_transaction(txid)
    assert funded.get_balance_sats() == 50 * COIN
    view = funded.get_transaction(txid)
    assert view is not None and view["details"][0]["abandoned"] is True
    assert funded.send_raw_transaction(signed) == txid  # the same bytes are still valid
