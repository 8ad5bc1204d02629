"""Mempool acceptance (bitcoind's AcceptToMemoryPool, in its order of checks).

Each rejection carries bitcoind's `state.ToString()` (reject reason, then ", " and the debug
message when there is one): `sendrawtransaction` puts it in the error message,
`testmempoolaccept` splits it into `reject-reason` and `reject-details`.
Replacement follows Core 28+ full-RBF by default (BIP125 rules 2-4 and 6). The ancestor and
descendant limits are Core 29's defaults (25 transactions, 101,000 vB), computed and worded
like txmempool.cpp's CalculateAncestorsAndCheckLimits, with PreChecks' single-conflict RBF
allowance and CPFP carve-out.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace

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
MAX_DUST_OUTPUTS_PER_TX = 1  # Core 29: one dust output is standard, if the tx pays no fee
EXTRA_DESCENDANT_TX_SIZE_LIMIT = 10_000  # vB, the CPFP carve-out's size bound
TRUC_VERSION = 3
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


@dataclass(frozen=True)
class Limits:
    """-limitancestorcount / -limitancestorsize / -limitdescendantcount /
    -limitdescendantsize, sizes in vB (Core 29 defaults)."""

    ancestor_count: int = 25
    ancestor_size_vb: int = 101_000
    descendant_count: int = 25
    descendant_size_vb: int = 101_000


DEFAULT_LIMITS = Limits()


class ChainLimitError(Exception):
    """One of txmempool.cpp's limit messages, e.g. `too many unconfirmed ancestors [limit: 25]`."""


def _core_order(txid: str) -> bytes:
    # std::set<..., CompareIteratorByHash> orders by uint256, compared on its internal
    # (little-endian) bytes: the displayed hex reversed.
    return bytes.fromhex(txid)[::-1]


def mempool_parents(mempool: Mempool, tx: Transaction, limits: Limits, entry_count: int = 1) -> (
    set[str]
):
    """The in-mempool parents of `tx` (CalculateMemPoolAncestors' parent search)."""
    parents: set[str] = set()
    for txid, _ in outpoints_of(tx):
        if txid in mempool.entries:
            parents.add(txid)
            if len(parents) + entry_count > limits.ancestor_count:
                raise ChainLimitError(
                    f"too many unconfirmed parents [limit: {limits.ancestor_count}]")
    return parents


def ancestors_within_limits(mempool: Mempool, parents: Iterable[str], entry_vsize: int,
                            entry_count: int, limits: Limits) -> set[str]:
    """CTxMemPool::CalculateAncestorsAndCheckLimits: walk up from the parents, failing on
    the first ancestor whose descendants, or the ancestor set itself, would grow too big."""
    staged = set(parents)
    ancestors: set[str] = set()
    total_vsize = entry_vsize
    while staged:
        stage = min(staged, key=_core_order)
        staged.discard(stage)
        ancestors.add(stage)
        total_vsize += mempool.entries[stage].vsize
        count, size = mempool.descendant_totals(stage)
        if size + entry_vsize > limits.descendant_size_vb:
            raise ChainLimitError(f"exceeds descendant size limit for tx {stage} "
                                  f"[limit: {limits.descendant_size_vb}]")
        if count + entry_count > limits.descendant_count:
            raise ChainLimitError(f"too many descendants for tx {stage} "
                                  f"[limit: {limits.descendant_count}]")
        if total_vsize > limits.ancestor_size_vb:
            raise ChainLimitError(f"exceeds ancestor size limit [limit: {limits.ancestor_size_vb}]")
        for parent in mempool.parents(stage):
            if parent not in ancestors:
                staged.add(parent)
            if len(staged) + len(ancestors) + entry_count > limits.ancestor_count:
                raise ChainLimitError(
                    f"too many unconfirmed ancestors [limit: {limits.ancestor_count}]")
    return ancestors


def check_chain_limits(mempool: Mempool, tx: Transaction, vsize: int,
                       limits: Limits = DEFAULT_LIMITS) -> None:
    """The wallet's last check before it hands out a transaction (-walletrejectlongchains,
    interfaces::Chain::checkChainLimits -> CTxMemPool::CheckPackageLimits of the one tx).
    It does not know about replacements: a bump of a chain's youngest transaction counts
    the original as still there. Raises ChainLimitError with Core's "possibly ..." text."""
    if vsize > limits.ancestor_size_vb:
        raise ChainLimitError(f"package size {vsize} exceeds ancestor size limit "
                              f"[limit: {limits.ancestor_size_vb}]")
    if vsize > limits.descendant_size_vb:
        raise ChainLimitError(f"package size {vsize} exceeds descendant size limit "
                              f"[limit: {limits.descendant_size_vb}]")
    parents = mempool_parents(mempool, tx, limits)
    try:
        ancestors_within_limits(mempool, parents, vsize, 1, limits)
    except ChainLimitError as exc:
        raise ChainLimitError(f"possibly {exc}") from None


def _check_mempool_limits(mempool: Mempool, verdict: Verdict, conflicts: list[str]) -> None:
    """PreChecks' ancestor calculation: Core's limits, loosened for a replacement of exactly
    one transaction (by that transaction and its descendants) and for the CPFP carve-out."""
    limits = DEFAULT_LIMITS
    if len(conflicts) == 1:
        _, conflict_size = mempool.descendant_totals(conflicts[0])
        limits = replace(limits, descendant_count=limits.descendant_count + 1,
                         descendant_size_vb=limits.descendant_size_vb + conflict_size)
    try:
        parents = mempool_parents(mempool, verdict.tx, limits)
        ancestors_within_limits(mempool, parents, verdict.vsize, 1, limits)
        return
    except ChainLimitError as exc:
        error = f"too-long-mempool-chain, {exc}"
    if verdict.vsize > EXTRA_DESCENDANT_TX_SIZE_LIMIT or verdict.tx.version == TRUC_VERSION:
        raise Reject(error)
    carve_out = Limits(ancestor_count=2, ancestor_size_vb=limits.ancestor_size_vb,
                       descendant_count=limits.descendant_count + 1,
                       descendant_size_vb=limits.descendant_size_vb
                       + EXTRA_DESCENDANT_TX_SIZE_LIMIT)
    try:
        parents = mempool_parents(mempool, verdict.tx, carve_out)
        ancestors_within_limits(mempool, parents, verdict.vsize, 1, carve_out)
    except ChainLimitError:
        raise Reject(error) from None


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
    if data_outputs > 1:
        raise Reject("multi-op-return")
    if dust_outputs(tx) > MAX_DUST_OUTPUTS_PER_TX:
        raise Reject("dust")
    if stripped_size(tx) < 65:
        raise Reject("tx-size-small")


def dust_outputs(tx: Transaction) -> int:
    """GetDust at the default dust relay fee (an OP_RETURN output is never dust)."""
    return sum(1 for out in tx.vout if out.value < dust_threshold(bytes(out.script_pubkey.data)))


def is_final(tx: Transaction, height: int, mtp: int) -> bool:
    if tx.locktime == 0:
        return True
    limit = height if tx.locktime < LOCKTIME_THRESHOLD else mtp
    if tx.locktime < limit:
        return True
    return all(inp.sequence == SEQUENCE_FINAL for inp in tx.vin)


def evaluate(chain: Chain, mempool: Mempool, tx: Transaction, *, full_rbf: bool = True,
             check_fees: bool = True, check_limits: bool = True) -> Verdict:
    """Run every acceptance check without changing anything."""
    verdict = Verdict(tx=tx, txid=txid_of(tx), wtxid=wtxid_of(tx), vsize=vsize_of(tx),
                      weight=weight_of(tx))
    try:
        _evaluate(chain, mempool, tx, verdict, full_rbf=full_rbf, check_fees=check_fees,
                  check_limits=check_limits)
    except Reject as rejected:
        verdict.reason = rejected.reason
        verdict.missing_inputs = rejected.missing
    return verdict


def _evaluate(chain: Chain, mempool: Mempool, tx: Transaction, verdict: Verdict, *,
              full_rbf: bool, check_fees: bool, check_limits: bool) -> None:
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
    # PreCheckEphemeralTx: the one dust output IsStandardTx lets through needs a 0-fee tx.
    if fee != 0 and dust_outputs(tx):
        raise Reject("dust, tx with dust output must be 0-fee")
    if check_fees:
        minimum = fee_for(MIN_RELAY_SAT_KVB, verdict.vsize)
        if fee < minimum:
            raise Reject(f"min relay fee not met, {fee} < {minimum}")
    if check_limits:
        _check_mempool_limits(mempool, verdict, conflicts)
    if check_fees and conflicts:
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
