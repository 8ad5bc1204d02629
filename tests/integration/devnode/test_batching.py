"""One transaction paying many outputs: its size and fee, Core's weight limits, dust, and
the answers around replacing a batch (psbtbumpfee, resending the original).

Messages marked "captured" were captured from a real Bitcoin Core 29.2 (regtest); the others
are Core 29's text from its source (wallet/spend.cpp, wallet/coinselection.cpp,
policy/ephemeral_policy.cpp)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from cli.regtest_node import RegtestNode
from shared.node.errors import (
    InsufficientFunds,
    InvalidParameter,
    TxConflict,
    TxRejected,
    WalletError,
)
from tests.integration.devnode.conftest import FOREIGN, independent_decode
from tests.integration.devnode.test_chain_limits import foreign_addresses

COIN = 100_000_000


def batch(node: RegtestNode, count: int, amount: int = 10_000, salt: str = "") -> str:
    return node.create_raw_transaction({a: amount for a in foreign_addresses(count, salt)})


def test_a_50_output_batch_costs_what_core_charges(funded: RegtestNode) -> None:
    # Captured: 50 payouts + change from one input at 2 sat/vB: 1,660 vB, fee 3,320 sats.
    built = funded.fund_raw_transaction(batch(funded, 50), fee_rate_sat_vb=2)
    assert built.fee_sats == 3_320
    signed = funded.sign_raw_transaction_with_wallet(built.hex)
    decoded = independent_decode(signed)
    assert (len(decoded["inputs"]), len(decoded["outputs"])) == (1, 51)
    # 6,637 WU with the usual 71-byte signature (one in 256 low-R signatures is a byte
    # shorter: 6,636 WU, 1,659 vB, for the same fee).
    weight = decoded["tx"].calc_weight()
    assert weight in (6636, 6637) and decoded["vsize"] == (weight + 3) // 4
    verdict = funded.test_mempool_accept(signed)
    assert verdict["allowed"] is True and verdict["vsize"] == decoded["vsize"]
    assert verdict["fees"] == {"base": Decimal("0.00003320"),
                               "effective-feerate": Decimal(3_320_000 // decoded["vsize"])
                               / 10**8,
                               "effective-includes": [decoded["wtxid"]]}


def test_outputs_alone_heavier_than_a_standard_transaction(funded: RegtestNode) -> None:
    with pytest.raises(WalletError) as caught:
        funded.fund_raw_transaction(batch(funded, 3_300), fee_rate_sat_vb=2)
    assert (caught.value.code, caught.value.message) == (
        -4, "Maximum transaction weight is less than transaction weight without inputs")  # captured


def test_the_largest_batch_one_input_can_fund(funded: RegtestNode) -> None:
    # Core's arithmetic: 400,000 WU less 4 x (13 + 31 n) for the outputs, 124 for the
    # change, 272 for a P2WPKH input: n = 3,222 fits, 3,223 leaves no room for the input.
    built = funded.fund_raw_transaction(batch(funded, 3_222, amount=1_000), fee_rate_sat_vb=1,
                                        lock_unspents=False)
    signed = funded.sign_raw_transaction_with_wallet(built.hex)
    assert independent_decode(signed)["tx"].calc_weight() <= 400_000
    assert funded.test_mempool_accept(signed)["allowed"] is True
    with pytest.raises(WalletError) as heavy:
        funded.fund_raw_transaction(batch(funded, 3_223, amount=1_000), fee_rate_sat_vb=1)
    assert heavy.value.message == (
        "The inputs size exceeds the maximum weight. Please try sending a smaller amount or "
        "manually consolidating your wallet's UTXOs")
    with pytest.raises(WalletError) as no_change:
        funded.fund_raw_transaction(batch(funded, 3_225, amount=1_000), fee_rate_sat_vb=1)
    assert no_change.value.message == (
        "Maximum transaction weight is too low, can not accommodate change output")
    # Inputs given by the caller are not selected: the finished transaction is what is
    # too big.
    [coin] = funded.list_unspent(1)
    raw = funded.create_raw_transaction({a: 1_000 for a in foreign_addresses(3_225)},
                                        [f"{coin['txid']}:{coin['vout']}"])
    with pytest.raises(WalletError) as large:
        funded.fund_raw_transaction(raw, fee_rate_sat_vb=1, add_inputs=False)
    assert (large.value.code, large.value.message) == (-4, "Transaction too large")


def test_dust_outputs(funded: RegtestNode) -> None:
    # Captured: the wallet refuses a 200-sat P2WPKH output ...
    with pytest.raises(WalletError) as wallet:
        funded.fund_raw_transaction(funded.create_raw_transaction({FOREIGN: 200}),
                                    fee_rate_sat_vb=2)
    assert (wallet.value.code, wallet.value.message) == (-4, "Transaction amount too small")
    with pytest.raises(InsufficientFunds) as send:  # SendMoney: -6 for every such error
        funded.send_to_address(FOREIGN, 200)
    assert (send.value.code, send.value.message) == (-6, "Transaction amount too small")
    # ... and the mempool one that pays a fee (captured). Core 29 allows one dust output
    # in a 0-fee transaction (ephemeral dust), never two.
    [coin] = funded.list_unspent(1)
    value = int(Decimal(str(coin["amount"])) * COIN)
    change = funded.get_new_address()
    outpoint = [f"{coin['txid']}:{coin['vout']}"]
    one = funded.sign_raw_transaction_with_wallet(funded.create_raw_transaction(
        {FOREIGN: 200, change: value - 200 - 1_000}, outpoint))
    with pytest.raises(TxRejected) as mempool:
        funded.send_raw_transaction(one)
    assert (mempool.value.code, mempool.value.message) == (
        -26, "dust, tx with dust output must be 0-fee")
    verdict = funded.test_mempool_accept(one)
    assert (verdict["reject-reason"], verdict["reject-details"]) == (
        "dust", "dust, tx with dust output must be 0-fee")
    [other] = foreign_addresses(1, salt="dust")
    two = funded.sign_raw_transaction_with_wallet(funded.create_raw_transaction(
        {FOREIGN: 200, other: 200, change: value - 400 - 1_000}, outpoint))
    with pytest.raises(TxRejected) as plain:
        funded.send_raw_transaction(two)
    assert plain.value.message == "dust"


def test_createrawtransaction_outputs_as_an_array(funded: RegtestNode) -> None:
    addresses = foreign_addresses(250)
    raw = funded.call("createrawtransaction", [], [{a: "0.0001"} for a in addresses])
    decoded = funded.decode_raw_transaction(raw)
    assert [o.address for o in decoded.outputs] == addresses
    assert {o.value_sats for o in decoded.outputs} == {10_000}
    with pytest.raises(InvalidParameter) as duplicate:
        funded.call("createrawtransaction", [], [{addresses[0]: 1}, {addresses[1]: 1},
                                                 {addresses[0]: 2}])
    assert (duplicate.value.code, duplicate.value.message) == (
        -8, f"Invalid parameter, duplicated address: {addresses[0]}")  # captured


def test_replacing_a_batch_with_psbtbumpfee(funded: RegtestNode) -> None:
    built = funded.fund_raw_transaction(batch(funded, 50), fee_rate_sat_vb=2)
    original = funded.sign_raw_transaction_with_wallet(built.hex)
    original_txid = funded.send_raw_transaction(original)
    # Captured: same input, same 51 outputs, ten times the fee at 20 sat/vB.
    bumped = funded.call("psbtbumpfee", original_txid, {"fee_rate": 20})
    assert set(bumped) == {"psbt", "origfee", "fee", "errors"}
    assert (bumped["origfee"], bumped["fee"], bumped["errors"]) == (
        Decimal("0.00003320"), Decimal("0.00033200"), [])
    decoded = funded.decode_psbt(bumped["psbt"])
    inputs = [f"{i['txid']}:{i['vout']}" for i in decoded["tx"]["vin"]]
    assert inputs == independent_decode(original)["inputs"]
    assert len(decoded["tx"]["vout"]) == 51
    assert funded.get_mempool_entry(original_txid) is not None  # nothing sent yet
    processed, complete = funded.wallet_process_psbt(bumped["psbt"])
    assert complete
    final_hex, complete = funded.finalize_psbt(processed)
    assert complete and final_hex
    bump_txid = funded.send_raw_transaction(final_hex)
    assert original_txid not in funded.call("getrawmempool")
    # Captured: the original comes back as a replacement that pays less (captured at
    # 1,660 vB both: 0.00002000 <= 0.00020000).
    with pytest.raises(TxConflict) as resend:
        funded.send_raw_transaction(original)
    new_rate = 3_320_000 // independent_decode(original)["vsize"]
    old_rate = 33_200_000 // independent_decode(final_hex)["vsize"]
    assert (resend.value.code, resend.value.message) == (
        -26, f"insufficient fee, rejecting replacement {original_txid}; new feerate "
             f"0.{new_rate:08d} BTC/kvB <= old feerate 0.{old_rate:08d} BTC/kvB")
    funded.mine()
    view = funded.get_transaction(original_txid)
    assert view is not None
    assert (view["confirmations"], view["walletconflicts"], view["mempoolconflicts"]) == (
        -1, [bump_txid], [])
