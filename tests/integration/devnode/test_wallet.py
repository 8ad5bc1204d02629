"""The wallet's bookkeeping RPCs: balances, coins, locks, history, gettxout."""

from __future__ import annotations

from decimal import Decimal

import pytest

from cli.regtest_node import RegtestNode
from shared.node.errors import InvalidAddress, InvalidParameter, WalletError
from tests.integration.devnode.conftest import FOREIGN, pay

COIN = 100_000_000


def test_balances_track_maturity_and_pending(funded: RegtestNode) -> None:
    balances = funded.call("getbalances")["mine"]
    assert balances["trusted"] == 50 and balances["immature"] == 5000
    info = funded.get_wallet_info()
    assert info["walletname"] == "hot" and info["balance"] == 50
    mine = funded.get_new_address()
    funded.send_to_address(mine, COIN)
    # Our own unconfirmed change and self-payment stay trusted.
    assert funded.get_balance_sats() < 50 * COIN
    assert funded.get_balance_sats() > 49 * COIN


def test_listunspent_and_gettxout(funded: RegtestNode) -> None:
    [coin] = funded.list_unspent(1)
    assert coin["amount"] == 50 and coin["confirmations"] == 101 and coin["safe"]
    outpoint = f"{coin['txid']}:{coin['vout']}"
    out = funded.get_tx_out(outpoint)
    assert out is not None and out["coinbase"] and out["confirmations"] == 101
    signed, txid, _ = pay(funded, {FOREIGN: COIN})
    funded.send_raw_transaction(signed)
    assert funded.get_tx_out(outpoint) is None  # spent in the mempool
    assert funded.get_tx_out(outpoint, include_mempool=False) is not None
    assert funded.get_tx_out(f"{txid}:0", include_mempool=False) is None
    mempool_out = funded.get_tx_out(f"{txid}:0")
    assert mempool_out is not None and mempool_out["confirmations"] == 0
    assert [u["txid"] for u in funded.list_unspent(0)] == [txid]
    assert funded.list_unspent(1) == []


def test_lockunspent_follows_bitcoind(funded: RegtestNode) -> None:
    [coin] = funded.list_unspent(1)
    outpoint = f"{coin['txid']}:{coin['vout']}"
    funded.lock_unspent([outpoint])
    assert funded.list_lock_unspent() == [outpoint]
    assert funded.list_unspent(1) == []  # locked coins are not listed
    assert funded.get_balance_sats() == 50 * COIN  # but still counted
    with pytest.raises(InvalidParameter) as again:
        funded.lock_unspent([outpoint])
    assert again.value.message == "Invalid parameter, output already locked"
    with pytest.raises(InvalidParameter) as unknown:
        funded.lock_unspent([f"{'22' * 32}:0"])
    assert unknown.value.message == "Invalid parameter, unknown transaction"
    with pytest.raises(InvalidParameter):
        funded.call("lockunspent", True, [{"txid": coin["txid"], "vout": 5}])
    funded.unlock_unspent([outpoint, f"{'22' * 32}:0"])
    assert funded.list_lock_unspent() == []
    funded.unlock_unspent([outpoint])  # not locked any more: no error


def test_history_entries(funded: RegtestNode) -> None:
    start = funded.get_best_block_hash()
    mine = funded.get_new_address()
    to_foreign = funded.send_to_address(FOREIGN, 2 * COIN)
    to_self = funded.send_to_address(mine, COIN)
    funded.generate_to_address(1, funded.get_new_address())
    since = funded.list_since_block(start)
    sends = [e for e in since["transactions"] if e["category"] == "send"]
    assert {(e["txid"], e["address"], e["amount"]) for e in sends} == {
        (to_foreign, FOREIGN, -2), (to_self, mine, -1)}
    assert all(e["fee"] < 0 and e["confirmations"] == 1 and e["blockhash"] for e in sends)
    receives = [e for e in since["transactions"] if e["category"] == "receive"]
    assert [(e["txid"], e["amount"]) for e in receives] == [(to_self, 1)]
    assert since["lastblock"] == funded.get_best_block_hash()
    everything = funded.list_since_block()
    assert len(everything["transactions"]) > len(since["transactions"])
    recent = funded.call("listtransactions", "*", 3)
    assert len(recent) == 3
    view = funded.get_transaction(to_foreign)
    assert view is not None
    assert view["amount"] == -2 and view["fee"] < 0
    assert view["details"][0]["category"] == "send"


def test_createrawtransaction_options(funded: RegtestNode) -> None:
    [coin] = funded.list_unspent(1)
    raw = funded.call("createrawtransaction", [{"txid": coin["txid"], "vout": 0}],
                      [{FOREIGN: 1}, {"data": "cafe"}], 0, True)
    decoded = funded.call("decoderawtransaction", raw)
    assert decoded["vin"][0]["sequence"] == 0xFFFFFFFD
    assert decoded["vout"][1]["scriptPubKey"]["type"] == "nulldata"
    with pytest.raises(InvalidParameter) as duplicate:
        funded.call("createrawtransaction", [], [{FOREIGN: 1}, {FOREIGN: 2}])
    assert "duplicated address" in duplicate.value.message
    empty = funded.create_raw_transaction({FOREIGN: 5000})
    # A zero-input transaction decodes as such, not as a broken segwit one.
    assert funded.decode_raw_transaction(empty).inputs == []


def test_fundrawtransaction_options(funded: RegtestNode) -> None:
    change_to = funded.call("getrawchangeaddress")
    raw = funded.create_raw_transaction({FOREIGN: COIN})
    result = funded.call("fundrawtransaction", raw, {
        "feeRate": "0.00010000", "changeAddress": change_to, "changePosition": 0,
        "replaceable": False, "lockUnspents": False})
    decoded = funded.call("decoderawtransaction", result["hex"])
    assert result["changepos"] == 0
    assert decoded["vout"][0]["scriptPubKey"]["address"] == change_to
    assert decoded["vin"][0]["sequence"] == 0xFFFFFFFE  # not BIP125-signalling
    # 0.0001 BTC/kvB = 10 sat/vB, on the size the transaction has once signed.
    signed = funded.decode_raw_transaction(funded.sign_raw_transaction_with_wallet(result["hex"]))
    assert int(result["fee"] * COIN) == 10 * signed.vsize > 10 * decoded["vsize"]
    assert funded.list_lock_unspent() == []
    with pytest.raises(InvalidParameter):
        funded.call("fundrawtransaction", raw, {"fee_rate": 1, "feeRate": "0.0001"})


def test_misc_rpcs(funded: RegtestNode) -> None:
    assert funded.call("uptime") >= 0
    assert "sendrawtransaction" in funded.call("help").split("\n")
    assert funded.call("getaddressinfo", funded.call("getrawchangeaddress"))["ischange"]
    assert funded.call("getnetworkinfo")["relayfee"] == Decimal("0.00001")
    assert funded.call("getmempoolinfo")["size"] == 0


def test_getreceivedbyaddress(funded: RegtestNode) -> None:
    mine = funded.get_new_address()
    funded.send_to_address(mine, COIN)
    funded.send_many({mine: 2 * COIN, FOREIGN: COIN})
    assert funded.call("getreceivedbyaddress", mine) == 0  # minconf 1 by default
    assert funded.call("getreceivedbyaddress", mine, 0) == 3
    funded.mine()
    assert funded.call("getreceivedbyaddress", mine) == 3
    assert funded.call("getreceivedbyaddress", mine, 2) == 0
    # Spending it does not lower what was received.
    funded.send_to_address(FOREIGN, int(funded.get_balance_sats() - COIN))
    funded.mine()
    assert funded.call("getreceivedbyaddress", mine, 1) == 3
    # Coinbases count once mature, or when asked for.
    miner = funded.get_new_address()
    funded.generate_to_address(1, miner)
    assert funded.call("getreceivedbyaddress", miner) == 0
    assert funded.call("getreceivedbyaddress", miner, 1, True) == 50
    # Core 29's errors (wallet/rpc/coins.cpp GetReceived).
    with pytest.raises(WalletError) as foreign:
        funded.call("getreceivedbyaddress", FOREIGN)
    assert (foreign.value.code, foreign.value.message) == (-4, "Address not found in wallet")
    with pytest.raises(InvalidAddress) as invalid:
        funded.call("getreceivedbyaddress", "not-an-address")
    assert (invalid.value.code, invalid.value.message) == (-5, "Invalid Bitcoin address")


def test_coin_and_transaction_shapes(funded: RegtestNode) -> None:
    """The field lists captured from Bitcoin Core 29.2 (values differ run to run)."""
    txid = funded.send_to_address(FOREIGN, 1_000_000)
    view = funded.call("gettransaction", txid)
    assert list(view) == ["amount", "fee", "confirmations", "trusted", "txid", "wtxid",
                          "walletconflicts", "mempoolconflicts", "time", "timereceived",
                          "bip125-replaceable", "details", "hex", "lastprocessedblock"]
    assert list(view["details"][0]) == ["address", "category", "amount", "vout", "fee",
                                        "abandoned"]
    funded.mine()
    [coin] = [u for u in funded.list_unspent(1) if u["confirmations"] == 101]
    assert list(coin) == ["txid", "vout", "address", "label", "scriptPubKey", "amount",
                          "confirmations", "spendable", "solvable", "desc", "parent_descs",
                          "safe"]
    [parent] = coin["parent_descs"]
    assert parent.startswith("wpkh(tpub") and parent.split("#")[0].endswith("/84h/1h/0h/0/*)")
    assert coin["desc"].startswith("wpkh([") and "/84h/1h/0h/0/0]" in coin["desc"]
    entry = funded.get_mempool_entry(funded.send_to_address(FOREIGN, 1_000_000))
    assert entry is not None and list(entry) == [
        "vsize", "weight", "time", "height", "descendantcount", "descendantsize",
        "ancestorcount", "ancestorsize", "wtxid", "fees", "depends", "spentby",
        "bip125-replaceable", "unbroadcast"]
    assert list(entry["fees"]) == ["base", "modified", "ancestor", "descendant"]
