"""Mempool acceptance (bitcoind's AcceptToMemoryPool, in its order of checks).

Each rejection carries bitcoind's reject reason (`state.ToString()`), which is what
`sendrawtransaction` puts in the error message and `testmempoolaccept` in `reject-reason`.
Replacement follows Core 28+ full-RBF by default (BIP125 rules 2-4 and 6).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from embit.transaction import Transaction

from devnode.chain import COINBASE_MATURITY, MEMPOOL_HEIGHT, Chain, Coin, Mempool
from devnode.errors import RPC_TRANSACTION_ERROR, RPC_TRANSACTION_REJECTED
from devnode.scriptcode import dust_threshold, is_push_only, script_type
from devnode.scripts import ScriptFailure, verify_input
from devnode.txutil import (
    LOCKTIME_THRESHOLD,
    MAX_MONEY,
    SEQUENCE_FINAL,
    fee_for,
    is_coinbase,
    outpoints_of,
    signals_rbf,
    stripped_size,
    txid_of,
    vsize_of,
    weight_of,
    wtxid_of,
)

MIN_RELAY_SAT_KVB = 1000
INCREMENTAL_RELAY_SAT_KVB = 1000
MAX_STANDARD_TX_WEIGHT = 400_000
MAX_REPLACEMENT_CANDIDATES = 100
STANDARD_SCRIPT_TYPES = {
    "pubkeyhash", "scripthash", "witness_v0_keyhash", "witness_v0_scripthash",
    "witness_v1_taproot", "nulldata", "pubkey", "multisig", "witness_unknown",
}


def format_money(sats: int) -> str:
    """bitcoind's FormatMoney: 8 decimals, trailing zeros trimmed down to two."""
    sign = "-" if sats < 0 else ""
    text = f"{abs(sats) // 100_000_000}.{abs(sats) % 100_000_000:08d}"
    while text.endswith("0") and text[-3] != ".":
        text = text[:-1]
    return sign + text


def format_fee_rate(sat_kvb: int) -> str:
    return f"{sat_kvb // 100_000_000}.{sat_kvb % 100_000_000:08d} BTC/kvB"


@dataclass
class Verdict:
    tx: Transaction
    txid: str
    wtxid: str
    vsize: int
    weight: int
    fee: int | None = None
    reason: str | None = None
    missing_inputs: bool = False
    replaced: list[str] = field(default_factory=list)  # direct conflicts and their descendants

    @property
    def ok(self) -> bool:
        return self.reason is None

    @property
    def error_code(self) -> int:
        return RPC_TRANSACTION_ERROR if self.missing_inputs else RPC_TRANSACTION_REJECTED


class Reject(Exception):
    def __init__(self, reason: str, *, missing: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.missing = missing


def check_transaction(tx: Transaction) -> None:
    """CheckTransaction: context-free consensus checks."""
    if not tx.vin:
        raise Reject("bad-txns-vin-empty")
    if not tx.vout:
        raise Reject("bad-txns-vout-empty")
    total = 0
    for out in tx.vout:
        if out.value > MAX_MONEY:
            raise Reject("bad-txns-vout-toolarge")
        total += out.value
        if total > MAX_MONEY:
            raise Reject("bad-txns-txouttotal-toolarge")
    if len(set(outpoints_of(tx))) != len(tx.vin):
        raise Reject("bad-txns-inputs-duplicate")


def check_standard(tx: Transaction) -> None:
    """IsStandardTx."""
    if tx.version < 1 or tx.version > 3:
        raise Reject("version")
    if weight_of(tx) > MAX_STANDARD_TX_WEIGHT:
        raise Reject("tx-size")
    for inp in tx.vin:
        if len(inp.script_sig.data) > 1650:
            raise Reject("scriptsig-size")
        if not is_push_only(bytes(inp.script_sig.data)):
            raise Reject("scriptsig-not-pushonly")
    data_outputs = 0
    for out in tx.vout:
        script = bytes(out.script_pubkey.data)
        kind = script_type(script)
        if kind not in STANDARD_SCRIPT_TYPES:
            raise Reject("scriptpubkey")
        if kind == "nulldata":
            data_outputs += 1
        elif out.value < dust_threshold(script):
            raise Reject("dust")
    if data_outputs > 1:
        raise Reject("multi-op-return")
    if stripped_size(tx) < 65:
        raise Reject("tx-size-small")


def is_final(tx: Transaction, height: int, mtp: int) -> bool:
    if tx.locktime == 0:
        return True
    limit = height if tx.locktime < LOCKTIME_THRESHOLD else mtp
    if tx.locktime < limit:
        return True
    return all(inp.sequence == SEQUENCE_FINAL for inp in tx.vin)


def evaluate(chain: Chain, mempool: Mempool, tx: Transaction, *, full_rbf: bool = True,
             check_fees: bool = True) -> Verdict:
    """Run every acceptance check without changing anything."""
    verdict = Verdict(tx=tx, txid=txid_of(tx), wtxid=wtxid_of(tx), vsize=vsize_of(tx),
                      weight=weight_of(tx))
    try:
        _evaluate(chain, mempool, tx, verdict, full_rbf=full_rbf, check_fees=check_fees)
    except Reject as rejected:
        verdict.reason = rejected.reason
        verdict.missing_inputs = rejected.missing
    return verdict


def _evaluate(chain: Chain, mempool: Mempool, tx: Transaction, verdict: Verdict, *,
              full_rbf: bool, check_fees: bool) -> None:
    check_transaction(tx)
    if is_coinbase(tx):
        raise Reject("coinbase")
    check_standard(tx)
    if not is_final(tx, chain.height + 1, chain.median_time_past()):
        raise Reject("non-final")
    existing = mempool.entries.get(verdict.txid)
    if existing is not None:
        if existing.wtxid == verdict.wtxid:
            raise Reject("txn-already-in-mempool")
        raise Reject("txn-same-nonwitness-data-in-mempool")

    outpoints = outpoints_of(tx)
    conflicts = sorted({s for op in outpoints if (s := mempool.spends.get(op)) is not None})
    if conflicts and not full_rbf:
        for conflict in conflicts:
            entry = mempool.entries[conflict]
            if not signals_rbf(entry.tx) and not any(
                signals_rbf(mempool.entries[a].tx) for a in mempool.ancestors(conflict)
            ):
                raise Reject("txn-mempool-conflict")
    evicted: list[str] = []
    for conflict in conflicts:
        for txid in [conflict, *mempool.descendants(conflict)]:
            if txid not in evicted:
                evicted.append(txid)

    coins: list[Coin] = []
    for outpoint in outpoints:
        coin = chain.utxo.get(outpoint)
        if coin is None:
            coin = mempool.coin(outpoint)
            if coin is not None and outpoint[0] in evicted:
                raise Reject("bad-txns-spends-conflicting-tx")
        if coin is None:
            if any((verdict.txid, n) in chain.utxo for n in range(len(tx.vout))):
                raise Reject("txn-already-known")
            raise Reject("bad-txns-inputs-missingorspent", missing=True)
        coins.append(coin)

    spend_height = chain.height + 1
    for coin in coins:
        if coin.coinbase and spend_height - coin.height < COINBASE_MATURITY:
            raise Reject(
                "bad-txns-premature-spend-of-coinbase, tried to spend coinbase at depth "
                f"{spend_height - coin.height}"
            )
    value_in = sum(c.value for c in coins)
    value_out = sum(out.value for out in tx.vout)
    if value_in < value_out:
        raise Reject(
            f"bad-txns-in-belowout, value in ({format_money(value_in)}) < value out "
            f"({format_money(value_out)})"
        )
    fee = value_in - value_out
    verdict.fee = fee
    if check_fees:
        minimum = fee_for(MIN_RELAY_SAT_KVB, verdict.vsize)
        if fee < minimum:
            raise Reject(f"min relay fee not met, {fee} < {minimum}")
        if conflicts:
            _check_replacement(mempool, verdict, coins, outpoints, conflicts, evicted)
    verdict.replaced = evicted

    for index, coin in enumerate(coins):
        try:
            verify_input(tx, index, coin.script, coin.value)
        except ScriptFailure as failure:
            raise Reject(str(failure)) from None


def _check_replacement(mempool: Mempool, verdict: Verdict, coins: list[Coin],
                       outpoints: list[tuple[str, int]], conflicts: list[str],
                       evicted: list[str]) -> None:
    """BIP125 rules as Core applies them (policy/rbf.cpp)."""
    fee = verdict.fee or 0
    if len(evicted) > MAX_REPLACEMENT_CANDIDATES:
        raise Reject(f"too many potential replacements, rejecting replacement {verdict.txid}")
    # Rule 2: no new unconfirmed inputs beyond those the replaced transactions spent.
    allowed_parents = {p for c in conflicts for p in mempool.parents(c)}
    for outpoint, coin in zip(outpoints, coins, strict=True):
        if coin.height == MEMPOOL_HEIGHT and outpoint[0] not in allowed_parents:
            raise Reject(f"replacement-adds-unconfirmed, replacement {verdict.txid} adds "
                         f"unconfirmed input, idx 0")
    # Rule 6: a higher fee rate than every directly replaced transaction.
    new_rate = fee * 1000 // verdict.vsize
    for conflict in conflicts:
        entry = mempool.entries[conflict]
        old_rate = entry.fee * 1000 // entry.vsize
        if fee * entry.vsize <= entry.fee * verdict.vsize:
            raise Reject(
                f"insufficient fee, rejecting replacement {verdict.txid}; new feerate "
                f"{format_fee_rate(new_rate)} <= old feerate {format_fee_rate(old_rate)}"
            )
    # Rule 3: at least the absolute fees of everything it evicts.
    old_fees = sum(mempool.entries[t].fee for t in evicted)
    if fee < old_fees:
        raise Reject(
            f"insufficient fee, rejecting replacement {verdict.txid}, less fees than "
            f"conflicting txs; {format_money(fee)} < {format_money(old_fees)}"
        )
    # Rule 4: pay for its own relay at the incremental relay fee.
    needed = fee_for(INCREMENTAL_RELAY_SAT_KVB, verdict.vsize)
    if fee - old_fees < needed:
        raise Reject(
            f"insufficient fee, rejecting replacement {verdict.txid}, not enough additional "
            f"fees to relay; {format_money(fee - old_fees)} < {format_money(needed)}"
        )
