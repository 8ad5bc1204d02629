"""Unconfirmed chains at Bitcoin Core 29's limits: 25 ancestors, 25 descendants, 101,000 vB
either way, as the mempool (sendrawtransaction, testmempoolaccept, getmempoolentry) and the
wallet (fundrawtransaction, sendtoaddress, bumpfee, psbtbumpfee) report them.

Messages marked "captured" were captured from a real Bitcoin Core 29.2 (regtest); the others
are Core 29's text from its source (txmempool.cpp CalculateAncestorsAndCheckLimits and
CheckPackageLimits, validation.cpp PreChecks, wallet/spend.cpp, wallet/rpc/spend.cpp)."""

from __future__ import annotations

import hashlib
from decimal import Decimal

import pytest
from embit.networks import NETWORKS
from embit.script import Script

from cli.regtest_node import RegtestNode
from shared.node.errors import ChainLimitReached, InvalidParameter, TxRejected, WalletError
from tests.integration.devnode.conftest import FOREIGN

COIN = 100_000_000
# Captured from Bitcoin Core 29.2.
LONG_CHAIN = ("Unconfirmed UTXOs are available, but spending them creates a chain of "
              "transactions that will be rejected by the mempool")
TOO_MANY_ANCESTORS = "too-long-mempool-chain, too many unconfirmed ancestors [limit: 25]"


def foreign_addresses(count: int, salt: str = "") -> list[str]:
    """Distinct P2WPKH addresses nobody holds a key for."""
    return [Script(b"\x00\x14" + hashlib.sha256(f"{salt}{i}".encode()).digest()[:20])
            .address(NETWORKS["regtest"]) for i in range(count)]


def chain_of(node: RegtestNode, length: int) -> list[str]:
    """`length` wallet sends, each spending the previous one's change (the only coin)."""
    return [node.send_to_address(FOREIGN, 100_000, fee_rate_sat_vb=2) for _ in range(length)]


def only_coin(node: RegtestNode) -> dict[str, object]:
    [coin] = node.list_unspent(0)
    return coin


def spend_by_hand(node: RegtestNode, coin: dict[str, object], fee: int = 1_000) -> str:
    """Sign a spend of `coin` without the wallet's funding checks."""
    value = int(Decimal(str(coin["amount"])) * COIN)
    raw = node.create_raw_transaction({FOREIGN: value - fee}, [f"{coin['txid']}:{coin['vout']}"])
    return node.sign_raw_transaction_with_wallet(raw)


def test_a_chain_of_25_is_the_limit_for_mempool_and_wallet(funded: RegtestNode) -> None:
    chain = chain_of(funded, 25)
    youngest = funded.get_mempool_entry(chain[-1])
    oldest = funded.get_mempool_entry(chain[0])
    assert youngest is not None and oldest is not None
    entries = [funded.get_mempool_entry(t) for t in chain]
    assert youngest["ancestorcount"] == 25 and youngest["descendantcount"] == 1
    assert youngest["ancestorsize"] == sum(e["vsize"] for e in entries if e)
    assert youngest["fees"]["ancestor"] == sum(e["fees"]["base"] for e in entries if e)
    assert youngest["depends"] == [chain[-2]] and youngest["spentby"] == []
    assert youngest["unbroadcast"] is True  # as captured: submitted here, no peer asked
    assert oldest["descendantcount"] == 25 and oldest["ancestorcount"] == 1
    assert oldest["descendantsize"] == youngest["ancestorsize"]

    # The wallet's only coin is the 25th's change: funding refuses (captured, -4) ...
    raw = funded.create_raw_transaction({FOREIGN: COIN})
    with pytest.raises(ChainLimitReached) as fund_error:
        funded.fund_raw_transaction(raw, fee_rate_sat_vb=2)
    assert (fund_error.value.code, fund_error.value.message) == (-4, LONG_CHAIN)
    # ... and sendtoaddress says the same as -6, like every SendMoney error in Core.
    with pytest.raises(ChainLimitReached) as send_error:
        funded.send_to_address(FOREIGN, COIN)
    assert (send_error.value.code, send_error.value.message) == (-6, LONG_CHAIN)
    # Given the coin explicitly, the wallet's last check (checkChainLimits) refuses it.
    coin = only_coin(funded)
    preset = funded.create_raw_transaction({FOREIGN: 100_000}, [f"{coin['txid']}:{coin['vout']}"])
    with pytest.raises(WalletError) as limit:
        funded.fund_raw_transaction(preset, fee_rate_sat_vb=2, add_inputs=False)
    assert (limit.value.code, limit.value.message) == (
        -4, "possibly too many unconfirmed ancestors [limit: 25]")

    # A 26th signed by hand: the mempool refuses it (captured).
    signed = spend_by_hand(funded, coin)
    verdict = funded.test_mempool_accept(signed)
    assert verdict["allowed"] is False
    assert verdict["reject-reason"] == "too-long-mempool-chain"
    assert verdict["reject-details"] == TOO_MANY_ANCESTORS
    with pytest.raises(TxRejected) as rejected:
        funded.send_raw_transaction(signed)
    assert (rejected.value.code, rejected.value.message) == (-26, TOO_MANY_ANCESTORS)

    funded.mine()  # everything confirms: the same bytes are fine now
    assert funded.send_raw_transaction(signed)
    entry = funded.get_mempool_entry(chain[-1])
    assert entry is None


def test_bumping_the_youngest_of_25(funded: RegtestNode) -> None:
    chain = chain_of(funded, 25)
    for method in ("psbtbumpfee", "bumpfee"):
        # Captured: a transaction with a child cannot be bumped ...
        with pytest.raises(InvalidParameter) as parent:
            funded.call(method, chain[-2], {"fee_rate": 20})
        assert (parent.value.code, parent.value.message) == (
            -8, "Transaction has descendants in the wallet")
        # ... and the youngest neither: the wallet counts the original as still there, so
        # the oldest would get a 26th descendant (captured).
        with pytest.raises(WalletError) as youngest:
            funded.call(method, chain[-1], {"fee_rate": 20})
        assert (youngest.value.code, youngest.value.message) == (
            -4, f"Unable to create transaction. possibly too many descendants for tx "
                f"{chain[0]} [limit: 25]")
    # The mempool itself takes a replacement of one transaction even at the limit: the
    # conflict and its descendants are allowed for (validation.cpp PreChecks).
    original = funded.get_raw_transaction(chain[-1])
    assert original is not None
    spent = original["vin"][0]
    parent_tx = funded.get_raw_transaction(spent["txid"])
    assert parent_tx is not None
    value = int(parent_tx["vout"][spent["vout"]]["value"] * COIN)
    raw = funded.create_raw_transaction({FOREIGN: value - 5_000},
                                        [f"{spent['txid']}:{spent['vout']}"])
    replacement = funded.send_raw_transaction(funded.sign_raw_transaction_with_wallet(raw))
    assert funded.get_mempool_entry(chain[-1]) is None
    entry = funded.get_mempool_entry(replacement)
    assert entry is not None and entry["ancestorcount"] == 25


def test_descendant_limit_with_the_cpfp_carve_out(funded: RegtestNode) -> None:
    own = [funded.get_new_address() for _ in range(27)]
    parent = funded.send_many({address: 1_000_000 for address in own}, fee_rate_sat_vb=2)
    tx = funded.get_raw_transaction(parent)
    assert tx is not None
    children = []
    for out in tx["vout"]:
        if out["scriptPubKey"]["address"] not in own:
            continue  # the change
        coin = {"txid": parent, "vout": out["n"], "amount": out["value"]}
        signed = spend_by_hand(funded, coin, fee=500)
        if len(children) == 25:
            # The parent has 1 + 24 + the carve-out child: nothing more (Core's text).
            expected = f"too-long-mempool-chain, too many descendants for tx {parent} [limit: 25]"
            with pytest.raises(TxRejected) as caught:
                funded.send_raw_transaction(signed)
            assert (caught.value.code, caught.value.message) == (-26, expected)
            verdict = funded.test_mempool_accept(signed)
            assert verdict["reject-reason"] == "too-long-mempool-chain"
            assert verdict["reject-details"] == expected
            break
        # The 25th child makes 26 with the parent: allowed once, for a small child whose
        # only unconfirmed ancestor is the parent (CPFP carve-out).
        children.append(funded.send_raw_transaction(signed))
    entry = funded.get_mempool_entry(parent)
    assert entry is not None and entry["descendantcount"] == 26 and len(children) == 25
    # Every coin left descends from a transaction with 26 descendants: the wallet says so.
    with pytest.raises(ChainLimitReached):
        funded.fund_raw_transaction(funded.create_raw_transaction({FOREIGN: COIN}),
                                    fee_rate_sat_vb=2)


def test_chained_250_output_batches_meet_the_size_limit(funded: RegtestNode) -> None:
    """A batch pays 250 payouts (7,862 vB) and the next spends its change: twelve fit in
    101,000 vB, the thirteenth would make the first one's descendants too big."""
    batches: list[str] = []
    sizes: list[int] = []
    while True:
        raw = funded.create_raw_transaction(
            {a: 10_000 for a in foreign_addresses(250, salt=f"b{len(batches)}")})
        try:
            built = funded.fund_raw_transaction(raw, fee_rate_sat_vb=2)
        except WalletError as exc:
            refusal = exc
            break
        signed = funded.sign_raw_transaction_with_wallet(built.hex)
        batches.append(funded.send_raw_transaction(signed))
        sizes.append(funded.decode_raw_transaction(signed).vsize)
    assert len(batches) == 12
    assert sum(sizes) <= 101_000 < sum(sizes) + sizes[-1]
    assert (refusal.code, refusal.message) == (
        -4, f"possibly exceeds descendant size limit for tx {batches[0]} [limit: 101000]")
    # Signed by hand, the mempool refuses it with its own words.
    coin = only_coin(funded)
    value = int(Decimal(str(coin["amount"])) * COIN)
    outputs = {a: 10_000 for a in foreign_addresses(250, salt="by hand")}
    outputs[FOREIGN] = value - 250 * 10_000 - 20_000
    raw = funded.create_raw_transaction(outputs, [f"{coin['txid']}:{coin['vout']}"])
    signed = funded.sign_raw_transaction_with_wallet(raw)
    with pytest.raises(TxRejected) as caught:
        funded.send_raw_transaction(signed)
    assert (caught.value.code, caught.value.message) == (
        -26, f"too-long-mempool-chain, exceeds descendant size limit for tx {batches[0]} "
             f"[limit: 101000]")
    funded.mine()
    built = funded.fund_raw_transaction(raw, fee_rate_sat_vb=2)  # confirmed: no limit now
    assert built.fee_sats > 0
