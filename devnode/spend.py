"""Funding, signing and sending from the simulated wallet.

Coin selection is largest-first, tried in tiers like bitcoind's wallet: confirmed coins
first, then also our own trusted unconfirmed change, then (with `include_unsafe`) anything.
Fees are computed on the vsize of the transaction as it will be once signed (dummy low-R
signatures of the real size), rounded up, so the paid fee rate is never below the asked one.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from embit.script import Script, Witness
from embit.transaction import SIGHASH, Transaction, TransactionInput, TransactionOutput

from devnode.errors import (
    RPC_INVALID_ADDRESS_OR_KEY,
    RPC_INVALID_PARAMETER,
    RPC_WALLET_ERROR,
    RPC_WALLET_INSUFFICIENT_FUNDS,
    RPCError,
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
    vsize_of,
)
from devnode.wallet import Wallet

if TYPE_CHECKING:
    from devnode.node import Node

MAX_TX_FEE = 10_000_000  # -maxtxfee default, 0.1 BTC
WALLET_INCREMENTAL_SAT_KVB = 5000
INSUFFICIENT = "Insufficient funds"


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
    insufficient_code: int = RPC_WALLET_ERROR  # fundrawtransaction: -4; sendtoaddress: -6


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


def _dummy_input(txin: TransactionInput, script: bytes) -> TransactionInput:
    kind = signing_kind(script)
    if kind == "p2pkh":
        return TransactionInput(txin.txid, txin.vout, Script(push_data(DUMMY_SIG) +
                                                             push_data(DUMMY_PUB)), txin.sequence)
    script_sig = push_data(b"\x00\x14" + b"\x00" * 20) if kind == "p2sh" else b""
    return TransactionInput(txin.txid, txin.vout, Script(script_sig), txin.sequence,
                            Witness([DUMMY_SIG, DUMMY_PUB]))


def signed_vsize(vin: list[TransactionInput], scripts: list[bytes],
                 vout: list[TransactionOutput], version: int, locktime: int) -> int:
    dummy = Transaction(version=version, vin=[_dummy_input(i, s) for i, s in zip(vin, scripts,
                                                                                strict=True)],
                        vout=vout, locktime=locktime)
    return vsize_of(dummy)


def fund(node: Node, wallet: Wallet, tx: Transaction, opts: FundOptions) -> Funded:
    if not tx.vout:
        raise RPCError(RPC_INVALID_PARAMETER, "TX must have at least one output")
    for index in opts.subtract_fee_outputs:
        if index < 0 or index >= len(tx.vout):
            raise RPCError(RPC_INVALID_PARAMETER,
                           f"Invalid parameter 'subtract fee from output', position too large: "
                           f"{index}")
    for n, out in enumerate(tx.vout):
        script = bytes(out.script_pubkey.data)
        if n not in opts.subtract_fee_outputs and out.value < dust_threshold(script):
            raise RPCError(RPC_WALLET_ERROR, "Transaction amount too small")
    if opts.change_position is not None and not 0 <= opts.change_position <= len(tx.vout):
        raise RPCError(RPC_INVALID_PARAMETER, "changePosition out of bounds")
    rate = resolve_fee_rate(node, opts.fee_rate_sat_kvb)

    preset: list[tuple[TransactionInput, int, bytes]] = []
    for txin in tx.vin:
        outpoint = (bytes(txin.txid).hex(), txin.vout)
        found = find_coin(node, wallet, outpoint)
        if found is None:
            raise RPCError(RPC_WALLET_ERROR, f"Not found pre-selected input {outpoint[0]}:"
                                             f"{outpoint[1]}")
        if wallet.key_for(found[1]) is None or signing_kind(found[1]) is None:
            raise RPCError(RPC_WALLET_ERROR, f"Not solvable pre-selected input {outpoint[0]}:"
                                             f"{outpoint[1]}")
        preset.append((txin, found[0], found[1]))
    taken = {(bytes(t.txid).hex(), t.vout) for t, _, _ in preset}

    pool = [
        c for c in wallet.coins(include_locked=False)
        if c.outpoint not in taken and c.outpoint not in node.mempool.spends
        and c.confirmations >= opts.min_conf
        and (opts.max_conf is None or c.confirmations <= opts.max_conf)
        and signing_kind(c.script) is not None
    ]
    pool.sort(key=lambda c: (-c.value, c.outpoint))
    tiers = [[c for c in pool if c.confirmations >= 1],
             [c for c in pool if c.confirmations >= 1 or c.trusted]]
    if opts.include_unsafe:
        tiers.append(pool)
    if not opts.add_inputs:
        tiers = [[]]
    change_script = opts.change_script or _placeholder_change(opts.change_type)
    sequence = SEQUENCE_RBF if opts.replaceable else SEQUENCE_NONFINAL
    for tier in tiers:
        result = _select(tx, preset, tier, rate, change_script, sequence, opts)
        if result is not None:
            return _finish(wallet, result, opts)
    raise RPCError(opts.insufficient_code, INSUFFICIENT)


def _placeholder_change(change_type: str) -> bytes:
    # Same size as the real change script of that type; the key is only made if kept.
    return {"bech32": p2wpkh_script(DUMMY_PUB), "p2sh-segwit": b"\xa9\x14" + b"\x00" * 20 +
            b"\x87", "legacy": b"\x76\xa9\x14" + b"\x00" * 20 + b"\x88\xac"}[change_type]


@dataclass
class _Selection:
    tx: Transaction
    fee: int
    change_value: int | None
    change_script: bytes
    inputs: list[Outpoint]


def _select(tx: Transaction, preset: list[tuple[TransactionInput, int, bytes]],
            candidates: list, rate: int, change_script: bytes, sequence: int,
            opts: FundOptions) -> _Selection | None:
    vin = [t for t, _, _ in preset]
    scripts = [s for _, _, s in preset]
    total_in = sum(v for _, v, _ in preset)
    out_total = sum(out.value for out in tx.vout)
    sffo = bool(opts.subtract_fee_outputs)
    remaining = list(candidates)
    while True:
        fee_without_change = fee_for(rate, signed_vsize(vin, scripts, list(tx.vout), tx.version,
                                                        tx.locktime))
        needed = out_total if sffo else out_total + fee_without_change
        if vin and total_in >= needed:
            break
        if not remaining:
            return None
        coin = remaining.pop(0)
        vin.append(TransactionInput(bytes.fromhex(coin.outpoint[0]), coin.outpoint[1],
                                    sequence=sequence))
        scripts.append(coin.script)
        total_in += coin.value
    change_out = TransactionOutput(0, Script(change_script))
    fee_with_change = fee_for(rate, signed_vsize(vin, scripts, [*tx.vout, change_out],
                                                 tx.version, tx.locktime))
    change = total_in - out_total - (0 if sffo else fee_with_change)
    outputs = [TransactionOutput(o.value, Script(bytes(o.script_pubkey.data))) for o in tx.vout]
    if change >= dust_threshold(change_script) and (not sffo or change > 0):
        fee = fee_with_change
        change_value: int | None = change
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
    if fee > MAX_TX_FEE:
        raise RPCError(RPC_WALLET_ERROR, "Fee exceeds maximum configured by user (e.g. "
                                         "-maxtxfee, maxfeerate)")
    funded = Transaction(version=tx.version, vin=vin, vout=outputs, locktime=tx.locktime)
    return _Selection(funded, fee, change_value, change_script,
                      [(bytes(i.txid).hex(), i.vout) for i in vin])


def _finish(wallet: Wallet, sel: _Selection, opts: FundOptions) -> Funded:
    position = -1
    tx = sel.tx
    if sel.change_value is not None:
        script = opts.change_script or wallet.new_key(opts.change_type, change=True).script
        position = (opts.change_position if opts.change_position is not None
                    else random.randint(0, len(tx.vout)))
        tx.vout.insert(position, TransactionOutput(sel.change_value, Script(script)))
    new_inputs = tx.vin
    if opts.lock_unspents:
        for outpoint in sel.inputs:
            wallet.locked.setdefault(outpoint, False)
    return Funded(tx=Transaction(version=tx.version, vin=new_inputs, vout=tx.vout,
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
    """CreateTransaction + CommitTransaction: fund, sign, put in the mempool."""
    base = Transaction(version=2, vin=[], vout=outputs, locktime=node.chain.height)
    opts.insufficient_code = RPC_WALLET_INSUFFICIENT_FUNDS
    funded = fund(node, wallet, base, opts)
    signed, errors = sign_with_wallet(node, wallet, funded.tx)
    if errors:
        raise RPCError(RPC_WALLET_ERROR, "Signing transaction failed")
    verdict = node.accept(signed)
    if not verdict.ok:
        raise RPCError(RPC_WALLET_ERROR, f"Transaction rejected by the mempool: {verdict.reason}")
    return signed
