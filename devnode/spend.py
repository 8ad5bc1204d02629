"""Funding, signing and sending from the simulated wallet.

Coin selection follows the shape of bitcoind's (wallet/spend.cpp): coins are tried in
eligibility tiers (CoinEligibilityFilter) — confirmed coins first, then our own trusted
unconfirmed change with as few unconfirmed ancestors as possible (at most 2, 4, 12, then 24
ancestors and descendants), then (with `include_unsafe`) anything — and within a tier the
largest coins first (bitcoind runs BnB/knapsack/SRD here instead). Like
`-walletrejectlongchains` (the default), a coin whose transaction already has 25 unconfirmed
ancestors, or an ancestor with 25 descendants, is never picked; the finished transaction
must also pass the mempool's chain limits (checkChainLimits).

Fees are computed on the vsize of the transaction as it will be once signed (dummy low-R
signatures of the real size), rounded up, so the paid fee rate is never below the asked one.
That size is kept incrementally while inputs are added, so funding stays linear in the
number of inputs and outputs. Core's weight limits apply: outputs alone over the standard
400,000 WU, selected inputs that would not fit, or a finished transaction over it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from embit import compact
from embit.script import Script, Witness
from embit.transaction import SIGHASH, Transaction, TransactionInput, TransactionOutput

from devnode.errors import (
    RPC_INVALID_ADDRESS_OR_KEY,
    RPC_INVALID_PARAMETER,
    RPC_WALLET_ERROR,
    RPC_WALLET_INSUFFICIENT_FUNDS,
    RPCError,
)
from devnode.policy import (
    DEFAULT_LIMITS,
    MAX_STANDARD_TX_WEIGHT,
    ChainLimitError,
    check_chain_limits,
)
from devnode.scriptcode import AddressError, dust_threshold, push_data, script_for_address
from devnode.scripts import (
    DUMMY_PUB,
    DUMMY_SIG,
    ScriptFailure,
    p2wpkh_script,
    sign_input,
    signing_kind,
    verify_input,
)
from devnode.txutil import (
    SEQUENCE_NONFINAL,
    SEQUENCE_RBF,
    Outpoint,
    copy_tx,
    fee_for,
    outpoints_of,
)
from devnode.wallet import Wallet, WalletCoin

if TYPE_CHECKING:
    from devnode.node import Node

MAX_TX_FEE = 10_000_000  # -maxtxfee default, 0.1 BTC
WALLET_INCREMENTAL_SAT_KVB = 5000
WALLET_MIN_TX_FEE_SAT_KVB = 1000  # -mintxfee default
INSUFFICIENT = "Insufficient funds"
# Core 29's wallet messages (wallet/spend.cpp, wallet/coinselection.cpp).
AMOUNT_TOO_SMALL = "Transaction amount too small"
LONG_CHAIN = ("Unconfirmed UTXOs are available, but spending them creates a chain of "
              "transactions that will be rejected by the mempool")
NO_ROOM_FOR_INPUTS = "Maximum transaction weight is less than transaction weight without inputs"
NO_ROOM_FOR_CHANGE = "Maximum transaction weight is too low, can not accommodate change output"
INPUTS_TOO_HEAVY = ("The inputs size exceeds the maximum weight. Please try sending a smaller "
                    "amount or manually consolidating your wallet's UTXOs")
PRESET_TOO_HEAVY = ("The combination of the pre-selected inputs and the wallet automatic inputs "
                    "selection exceeds the transaction maximum weight. Please try sending a "
                    "smaller amount or manually consolidating your wallet's UTXOs")
TOO_LARGE = "Transaction too large"
MAX_FEE_EXCEEDED = "Fee exceeds maximum configured by user (e.g. -maxtxfee, maxfeerate)"


@dataclass
class FundOptions:
    add_inputs: bool = True
    include_unsafe: bool = False
    min_conf: int = 0
    max_conf: int | None = None
    change_script: bytes | None = None
    change_position: int | None = None
    change_type: str = "bech32"
    lock_unspents: bool = False
    fee_rate_sat_kvb: int | None = None
    subtract_fee_outputs: set[int] = field(default_factory=set)
    replaceable: bool = True
    # Pre-selected inputs may pay someone else's keys (psbtbumpfee of a transaction with
    # foreign inputs): sized from their script type, left for another signer.
    external_inputs: bool = False


@dataclass
class Funded:
    tx: Transaction
    fee: int
    change_position: int


def resolve_fee_rate(node: Node, explicit: int | None) -> int:
    if explicit is not None:
        return explicit
    if node.fee_estimate_sat_kvb is not None:
        return node.fee_estimate_sat_kvb
    if node.fallback_fee_sat_kvb:
        return node.fallback_fee_sat_kvb
    raise RPCError(
        RPC_WALLET_ERROR,
        "Fee estimation failed. Fallbackfee is disabled. Wait a few blocks or enable "
        "-fallbackfee.",
    )


def find_coin(node: Node, wallet: Wallet, outpoint: Outpoint) -> tuple[int, bytes] | None:
    prev = wallet.prev_output(outpoint)
    if prev is not None:
        return prev
    coin = node.chain.utxo.get(outpoint) or node.mempool.coin(outpoint)
    return (coin.value, coin.script) if coin else None


# ---------------------------------------------------------------- sizes


def _dummy_input(txin: TransactionInput, script: bytes) -> TransactionInput:
    kind = signing_kind(script)
    if kind == "p2pkh":
        return TransactionInput(txin.txid, txin.vout, Script(push_data(DUMMY_SIG) +
                                                             push_data(DUMMY_PUB)), txin.sequence)
    script_sig = push_data(b"\x00\x14" + b"\x00" * 20) if kind == "p2sh" else b""
    return TransactionInput(txin.txid, txin.vout, Script(script_sig), txin.sequence,
                            Witness([DUMMY_SIG, DUMMY_PUB]))


@dataclass(frozen=True)
class InputSize:
    """An input once signed: its bytes outside the witness, and its witness (the item count
    and items; a single 0x00 for an input without witness in a segwit transaction)."""

    body: int
    witness: int
    segwit: bool

    @property
    def weight(self) -> int:
        return self.body * 4 + self.witness

    @property
    def vsize(self) -> int:
        """Core's input_bytes (CalculateMaximumSignedInputSize): what coin selection charges."""
        return (self.weight + 3) // 4


_INPUT_SIZES: dict[str | None, InputSize] = {}


def input_size(script: bytes) -> InputSize:
    kind = signing_kind(script)
    if kind not in _INPUT_SIZES:
        dummy = _dummy_input(TransactionInput(b"\x00" * 32, 0), script)
        _INPUT_SIZES[kind] = InputSize(len(dummy.serialize()), len(dummy.witness.serialize()),
                                       bool(dummy.witness.items))
    return _INPUT_SIZES[kind]


def _output_bytes(out: TransactionOutput) -> int:
    script = out.script_pubkey.data
    return 8 + len(compact.to_bytes(len(script))) + len(script)


@dataclass
class TxSize:
    """The signed size of a transaction being built, kept as inputs and outputs are added
    (the same bytes embit would serialize for the dummy-signed transaction)."""

    inputs: int = 0
    outputs: int = 0
    body: int = 8  # version, locktime, and every input's and output's non-witness bytes
    witness: int = 0
    segwit: bool = False

    def add_input(self, size: InputSize) -> None:
        self.inputs += 1
        self.body += size.body
        self.witness += size.witness
        self.segwit = self.segwit or size.segwit

    def add_output(self, out: TransactionOutput) -> None:
        self.outputs += 1
        self.body += _output_bytes(out)

    @property
    def weight(self) -> int:
        counts = len(compact.to_bytes(self.inputs)) + len(compact.to_bytes(self.outputs))
        return (self.body + counts) * 4 + (2 + self.witness if self.segwit else 0)

    @property
    def vsize(self) -> int:
        return (self.weight + 3) // 4


def signed_vsize(vin: list[TransactionInput], scripts: list[bytes],
                 vout: list[TransactionOutput], version: int, locktime: int) -> int:
    """The vsize of the transaction once every input is signed by the wallet."""
    size = TxSize()
    for _, script in zip(vin, scripts, strict=True):
        size.add_input(input_size(script))
    for out in vout:
        size.add_output(out)
    return size.vsize


def noinputs_size(outputs: list[TransactionOutput]) -> int:
    """CreateTransactionInternal's tx_noinputs_size: version, locktime, input count and the
    segwit overhead (10 bytes), the output count and the outputs (change not included)."""
    return 10 + len(compact.to_bytes(len(outputs))) + sum(_output_bytes(o) for o in outputs)


# ---------------------------------------------------------------- funding


@dataclass(frozen=True)
class _Filter:
    """CoinEligibilityFilter: confirmations needed for our own / others' coins, and the
    most unconfirmed ancestors and descendants a coin's transaction may have."""

    conf_mine: int
    conf_theirs: int
    max_ancestors: int
    max_descendants: int


def _filters(include_unsafe: bool) -> list[_Filter]:
    """AutomaticCoinSelection's ordered filters with -spendzeroconfchange and
    -walletrejectlongchains at their defaults."""
    anc, desc = DEFAULT_LIMITS.ancestor_count, DEFAULT_LIMITS.descendant_count
    found = [
        _Filter(1, 6, 0, 0), _Filter(1, 1, 0, 0), _Filter(0, 1, 2, 2),
        _Filter(0, 1, min(4, anc // 3), min(4, desc // 3)),
        _Filter(0, 1, anc // 2, desc // 2), _Filter(0, 1, anc - 1, desc - 1),
    ]
    if include_unsafe:
        found.append(_Filter(0, 0, anc - 1, desc - 1))
    return found


@dataclass
class _Candidate:
    coin: WalletCoin
    size: InputSize
    ancestors: int  # the coin's transaction with its unconfirmed ancestors (0: confirmed)
    descendants: int  # the most descendants any of them has (CalculateDescendantMaximum)
    from_me: bool

    def eligible(self, rule: _Filter) -> bool:
        depth = rule.conf_mine if self.from_me else rule.conf_theirs
        return (self.coin.confirmations >= depth and self.ancestors <= rule.max_ancestors
                and self.descendants <= rule.max_descendants)


def _ancestry(node: Node, txid: str) -> tuple[int, int]:
    """CTxMemPool::GetTransactionAncestry: ancestor count (itself included) and the largest
    descendant count among it and its ancestors; (0, 0) for a confirmed transaction."""
    pool = node.mempool
    if txid not in pool.entries:
        return 0, 0
    ancestors = pool.ancestors(txid)
    return len(ancestors) + 1, max(pool.descendant_totals(t)[0] for t in [txid, *ancestors])


def _candidates(node: Node, wallet: Wallet, coins: list[WalletCoin]) -> list[_Candidate]:
    ancestry: dict[str, tuple[int, int]] = {}
    found: list[_Candidate] = []
    for coin in coins:
        txid = coin.outpoint[0]
        if txid not in ancestry:
            ancestry[txid] = _ancestry(node, txid)
        wtx = wallet.txs.get(txid)
        from_me = wtx is not None and wallet.debit(wtx.tx) > 0
        found.append(_Candidate(coin, input_size(coin.script), *ancestry[txid], from_me))
    found.sort(key=lambda c: (-c.coin.value, c.coin.outpoint))
    return found


class _Preset:
    """The caller's own inputs (fundrawtransaction's tx.vin, bumpfee's originals)."""

    def __init__(self, items: list[tuple[TransactionInput, int, bytes]]) -> None:
        self.items = items
        self.total = sum(value for _, value, _ in items)
        self.outpoints = {(bytes(t.txid).hex(), t.vout) for t, _, _ in items}


def fund(node: Node, wallet: Wallet, tx: Transaction, opts: FundOptions) -> Funded:
    """CreateTransactionInternal without signing: fundrawtransaction, walletcreatefundedpsbt,
    and the first half of send/bumpfee. Errors are -4 (RPC_WALLET_ERROR) with Core's text;
    `send` turns them into -6 like Core's SendMoney."""
    if not tx.vout:
        raise RPCError(RPC_INVALID_PARAMETER, "TX must have at least one output")
    for index in opts.subtract_fee_outputs:
        if index < 0 or index >= len(tx.vout):
            raise RPCError(RPC_INVALID_PARAMETER,
                           f"Invalid parameter 'subtract fee from output', position too large: "
                           f"{index}")
    for out in tx.vout:  # IsDust(recipient), whether or not it pays the fee
        if out.value < dust_threshold(bytes(out.script_pubkey.data)):
            raise RPCError(RPC_WALLET_ERROR, AMOUNT_TOO_SMALL)
    if opts.change_position is not None and not 0 <= opts.change_position <= len(tx.vout):
        raise RPCError(RPC_INVALID_PARAMETER, "changePosition out of bounds")
    rate = resolve_fee_rate(node, opts.fee_rate_sat_kvb)
    sffo = bool(opts.subtract_fee_outputs)

    items: list[tuple[TransactionInput, int, bytes]] = []
    for txin in tx.vin:
        outpoint = (bytes(txin.txid).hex(), txin.vout)
        found = find_coin(node, wallet, outpoint)
        if found is None:
            raise RPCError(RPC_WALLET_ERROR, f"Not found pre-selected input {outpoint[0]}:"
                                             f"{outpoint[1]}")
        solvable = signing_kind(found[1]) is not None
        if not solvable or (wallet.key_for(found[1]) is None and not opts.external_inputs):
            raise RPCError(RPC_WALLET_ERROR, f"Not solvable pre-selected input {outpoint[0]}:"
                                             f"{outpoint[1]}")
        items.append((txin, found[0], found[1]))
    preset = _Preset(items)

    coins = [
        c for c in wallet.coins(include_locked=False)
        if c.outpoint not in preset.outpoints and c.outpoint not in node.mempool.spends
        and c.confirmations >= opts.min_conf
        and (opts.max_conf is None or c.confirmations <= opts.max_conf)
        and signing_kind(c.script) is not None
        and (c.confirmations >= 1 or c.trusted or opts.include_unsafe)  # AvailableCoins' safe
    ] if opts.add_inputs else []
    candidates = _candidates(node, wallet, coins)
    filters = _filters(opts.include_unsafe)

    def amount(c: _Candidate) -> int:  # OutputGroup::GetSelectionAmount
        return c.coin.value if sffo else c.coin.value - fee_for(rate, c.size.vsize)

    # SelectCoins / AutomaticCoinSelection's checks before any selection is tried.
    noinputs = noinputs_size(list(tx.vout))
    out_total = sum(out.value for out in tx.vout)
    preset_amount = sum(value if sffo else value - fee_for(rate, input_size(script).vsize)
                        for _, value, script in preset.items)
    target = out_total + (0 if sffo else fee_for(rate, noinputs)) - preset_amount
    change_script = opts.change_script or _placeholder_change(opts.change_type)
    change_weight = _output_bytes(TransactionOutput(0, Script(change_script))) * 4
    max_selection_weight = MAX_STANDARD_TX_WEIGHT - noinputs * 4
    if target > 0 and candidates:
        if target > sum(amount(c) for c in candidates):
            raise RPCError(RPC_WALLET_ERROR, INSUFFICIENT)
        discarded = [c for c in candidates if not any(c.eligible(f) for f in filters)]
        long_chain = sum(amount(c) for c in discarded
                         if c.ancestors >= DEFAULT_LIMITS.ancestor_count
                         or c.descendants >= DEFAULT_LIMITS.descendant_count)
        raw_total = sum(c.coin.value for c in candidates)
        if raw_total - sum(amount(c) for c in discarded) < target:
            # Core 29 reads this as `1 + long_chain > target`: its `if (CAmount total_amount =
            # ... < value_to_select)` assigns the comparison (true, 1), not the difference.
            if 1 + long_chain > target:
                raise RPCError(RPC_WALLET_ERROR, LONG_CHAIN)
            raise RPCError(RPC_WALLET_ERROR, INSUFFICIENT)
        if max_selection_weight <= 0:
            raise RPCError(RPC_WALLET_ERROR, NO_ROOM_FOR_INPUTS)
        if max_selection_weight - change_weight < 0:
            raise RPCError(RPC_WALLET_ERROR, NO_ROOM_FOR_CHANGE)

    tiers = [[c for c in candidates if c.eligible(f)] for f in filters] if candidates else [[]]
    sequence = SEQUENCE_RBF if opts.replaceable else SEQUENCE_NONFINAL
    too_heavy = False
    seen: list[list[Outpoint]] = []
    for tier in tiers:
        key = [c.coin.outpoint for c in tier]
        if key in seen:
            continue  # the same coins as a stricter tier: the same answer
        seen.append(key)
        try:
            result = _select(tx, preset, tier, rate, change_script, sequence, opts,
                             max_selection_weight - change_weight)
        except _TooHeavy:
            too_heavy = True
            continue
        if result is not None:
            _check_finished(node, preset, result, noinputs)
            return _finish(wallet, result, opts)
    raise RPCError(RPC_WALLET_ERROR, INPUTS_TOO_HEAVY if too_heavy else INSUFFICIENT)


def _placeholder_change(change_type: str) -> bytes:
    # Same size as the real change script of that type; the key is only made if kept.
    return {"bech32": p2wpkh_script(DUMMY_PUB), "p2sh-segwit": b"\xa9\x14" + b"\x00" * 20 +
            b"\x87", "legacy": b"\x76\xa9\x14" + b"\x00" * 20 + b"\x88\xac"}[change_type]


class _TooHeavy(Exception):
    """The coins this tier would need do not fit in a standard transaction."""


@dataclass
class _Selection:
    tx: Transaction
    fee: int
    change_value: int | None
    change_script: bytes
    inputs: list[Outpoint]
    size: TxSize  # with the change output when there is one
    selected_weight: int  # the automatically selected inputs, as coin selection counts them


def _select(tx: Transaction, preset: _Preset, candidates: list[_Candidate], rate: int,
            change_script: bytes, sequence: int, opts: FundOptions, max_weight: int) -> (
    _Selection | None
):
    vin = [t for t, _, _ in preset.items]
    size = TxSize()
    for _, _, script in preset.items:
        size.add_input(input_size(script))
    for out in tx.vout:
        size.add_output(out)
    total_in = preset.total
    out_total = sum(out.value for out in tx.vout)
    sffo = bool(opts.subtract_fee_outputs)
    selected_weight = 0
    remaining = iter(candidates)
    while True:
        fee_without_change = fee_for(rate, size.vsize)
        needed = out_total if sffo else out_total + fee_without_change
        if vin and total_in >= needed:
            break
        candidate = next(remaining, None)
        if candidate is None:
            return None
        selected_weight += candidate.size.vsize * 4  # OutputGroup::m_weight
        if selected_weight > max_weight:
            raise _TooHeavy
        coin = candidate.coin
        vin.append(TransactionInput(bytes.fromhex(coin.outpoint[0]), coin.outpoint[1],
                                    sequence=sequence))
        size.add_input(candidate.size)
        total_in += coin.value
    change_out = TransactionOutput(0, Script(change_script))
    with_change = replace(size)
    with_change.add_output(change_out)
    fee_with_change = fee_for(rate, with_change.vsize)
    change = total_in - out_total - (0 if sffo else fee_with_change)
    outputs = [TransactionOutput(o.value, Script(bytes(o.script_pubkey.data))) for o in tx.vout]
    if change >= dust_threshold(change_script) and (not sffo or change > 0):
        fee = fee_with_change
        change_value: int | None = change
        size = with_change
    else:
        fee = fee_without_change
        change_value = None
    if sffo:
        share, rest = divmod(fee, len(opts.subtract_fee_outputs))
        for i, index in enumerate(sorted(opts.subtract_fee_outputs)):
            outputs[index].value -= share + (rest if i == 0 else 0)
            script = bytes(outputs[index].script_pubkey.data)
            if outputs[index].value < dust_threshold(script):
                raise RPCError(RPC_WALLET_ERROR,
                               "The transaction amount is too small to pay the fee")
        fee += 0 if change_value is not None else total_in - out_total
    elif change_value is None:
        fee = total_in - out_total  # a change below dust is left to the miner
    funded = Transaction(version=tx.version, vin=vin, vout=outputs, locktime=tx.locktime)
    return _Selection(funded, fee, change_value, change_script,
                      [(bytes(i.txid).hex(), i.vout) for i in vin], size, selected_weight)


def _check_finished(node: Node, preset: _Preset, sel: _Selection, noinputs: int) -> None:
    """The checks Core makes once the coins are chosen, in its order."""
    if preset.items and sel.selected_weight:
        preset_weight = sum(input_size(s).vsize * 4 for _, _, s in preset.items)
        if preset_weight + sel.selected_weight > MAX_STANDARD_TX_WEIGHT - noinputs * 4:
            raise RPCError(RPC_WALLET_ERROR, PRESET_TOO_HEAVY)
    if sel.size.weight > MAX_STANDARD_TX_WEIGHT:
        raise RPCError(RPC_WALLET_ERROR, TOO_LARGE)
    if sel.fee > MAX_TX_FEE:
        raise RPCError(RPC_WALLET_ERROR, MAX_FEE_EXCEEDED)
    try:  # -walletrejectlongchains: the mempool must take it as it is
        check_chain_limits(node.mempool, sel.tx, sel.size.vsize)
    except ChainLimitError as exc:
        raise RPCError(RPC_WALLET_ERROR, str(exc)) from None


def _finish(wallet: Wallet, sel: _Selection, opts: FundOptions) -> Funded:
    position = -1
    tx = sel.tx
    if sel.change_value is not None:
        script = opts.change_script or wallet.new_key(opts.change_type, change=True).script
        position = (opts.change_position if opts.change_position is not None
                    else random.randint(0, len(tx.vout)))
        tx.vout.insert(position, TransactionOutput(sel.change_value, Script(script)))
    if opts.lock_unspents:
        for outpoint in sel.inputs:
            wallet.locked.setdefault(outpoint, False)
    return Funded(tx=Transaction(version=tx.version, vin=tx.vin, vout=tx.vout,
                                 locktime=tx.locktime), fee=sel.fee, change_position=position)


def change_script_from(address: object) -> bytes:
    try:
        return script_for_address(address)
    except AddressError:
        raise RPCError(RPC_INVALID_ADDRESS_OR_KEY,
                       "Change address must be a valid bitcoin address") from None


# ---------------------------------------------------------------- signing


def sign_with_wallet(node: Node, wallet: Wallet, tx: Transaction,
                     prevtxs: dict[Outpoint, tuple[int, bytes]] | None = None,
                     hashtype: int = SIGHASH.ALL) -> tuple[Transaction, list[dict[str, object]]]:
    """signrawtransactionwithwallet: sign what we can, then verify every input."""
    tx = copy_tx(tx)
    spent: list[tuple[int, bytes] | None] = []
    for outpoint in outpoints_of(tx):
        found = (prevtxs or {}).get(outpoint)
        if found is None:
            coin = node.chain.utxo.get(outpoint) or node.mempool.coin(outpoint)
            found = (coin.value, coin.script) if coin else None
        spent.append(found)
    for index, found in enumerate(spent):
        if found is None:
            continue
        key = wallet.key_for(found[1])
        if key is None or signing_kind(found[1]) is None:
            continue
        script_sig, witness, _ = sign_input(tx, index, key.key, found[1], found[0], hashtype)
        tx.vin[index].script_sig = Script(script_sig)
        tx.vin[index].witness = Witness(witness)
    errors: list[dict[str, object]] = []
    for index, found in enumerate(spent):
        inp = tx.vin[index]
        message: str | None = None
        if found is None:
            message = "Input not found or already spent"
        else:
            try:
                verify_input(tx, index, found[1], found[0])
            except ScriptFailure as failure:
                message = (str(failure).split("(", 1)[-1].rstrip(")")
                           if wallet.key_for(found[1]) else
                           "Unable to sign input, invalid stack size (possibly missing key)")
        if message:
            errors.append({
                "txid": bytes(inp.txid).hex(), "vout": inp.vout,
                "witness": [bytes(w).hex() for w in inp.witness.items],
                "scriptSig": bytes(inp.script_sig.data).hex(), "sequence": inp.sequence,
                "error": message,
            })
    return tx, errors


def send(node: Node, wallet: Wallet, outputs: list[TransactionOutput], opts: FundOptions) -> (
    Transaction
):
    """CreateTransaction + CommitTransaction: fund, sign, put in the mempool. Like Core's
    SendMoney (sendtoaddress, sendmany), every CreateTransaction error is -6
    (RPC_WALLET_INSUFFICIENT_FUNDS) whatever it says."""
    base = Transaction(version=2, vin=[], vout=outputs, locktime=node.chain.height)
    try:
        funded = fund(node, wallet, base, opts)
    except RPCError as exc:
        if exc.code == RPC_WALLET_ERROR:
            raise RPCError(RPC_WALLET_INSUFFICIENT_FUNDS, exc.message) from None
        raise
    signed, errors = sign_with_wallet(node, wallet, funded.tx)
    if errors:
        raise RPCError(RPC_WALLET_INSUFFICIENT_FUNDS, "Signing transaction failed")
    verdict = node.accept(signed)
    if not verdict.ok:
        raise RPCError(RPC_WALLET_ERROR, f"Transaction rejected by the mempool: {verdict.reason}")
    return signed
