"""Replacements: the wallet's `bumpfee`, and the foreign double-spend fault injection."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from embit import ec
from embit.script import Script, Witness
from embit.transaction import Transaction, TransactionInput, TransactionOutput

from devnode.errors import (
    RPC_INVALID_ADDRESS_OR_KEY,
    RPC_INVALID_PARAMETER,
    RPC_WALLET_ERROR,
    RPC_WALLET_INSUFFICIENT_FUNDS,
    RPCError,
)
from devnode.policy import INCREMENTAL_RELAY_SAT_KVB, MIN_RELAY_SAT_KVB, format_money
from devnode.scriptcode import AddressError, address_of, dust_threshold, script_for_address
from devnode.scripts import p2wpkh_script, sign_input
from devnode.spend import (
    WALLET_INCREMENTAL_SAT_KVB,
    Funded,
    FundOptions,
    find_coin,
    fund,
    resolve_fee_rate,
    sign_with_wallet,
    signed_vsize,
)
from devnode.txutil import SEQUENCE_RBF, fee_for, outpoints_of, txid_of, vsize_of
from devnode.wallet import Wallet, WalletTx

if TYPE_CHECKING:
    from devnode.node import Node


def bump_fee(node: Node, wallet: Wallet, wtx: WalletTx, rate: int | None) -> (
    tuple[Transaction, int, int]
):
    """bumpfee: the replacement, signed and in the mempool. Returns (replacement, old fee,
    new fee)."""
    funded, old_fee = create_bump(node, wallet, wtx, rate)
    signed, errors = sign_with_wallet(node, wallet, funded.tx)
    if errors:
        raise RPCError(RPC_WALLET_ERROR, "Can't sign transaction.")
    verdict = node.accept(signed)
    if not verdict.ok:
        raise RPCError(RPC_WALLET_ERROR, f"Transaction rejected by the mempool: {verdict.reason}")
    return signed, old_fee, funded.fee


def create_bump(node: Node, wallet: Wallet, wtx: WalletTx, rate: int | None) -> (
    tuple[Funded, int]
):
    """feebumper::CreateRateBumpTransaction: same inputs (more if needed), same recipients,
    a higher fee taken from the change; unsigned (psbtbumpfee stops here). Returns the
    funded replacement and the old fee."""
    state = wallet.state(wtx)
    if state.confirmations != 0:
        raise RPCError(RPC_WALLET_ERROR,
                       "Transaction has been mined, or is conflicted with a mined transaction")
    if wtx.replaced_by:
        raise RPCError(RPC_WALLET_ERROR, f"Cannot bump transaction {wtx.txid} which was already "
                                         f"bumped by transaction {wtx.replaced_by}")
    if any(wallet.spends.get((wtx.txid, n)) for n in range(len(wtx.tx.vout))):
        raise RPCError(RPC_INVALID_PARAMETER, "Transaction has descendants in the wallet")
    if node.mempool.descendants(wtx.txid):
        raise RPCError(RPC_INVALID_PARAMETER, "Transaction has descendants in the mempool")
    if not wallet.all_inputs_mine(wtx.tx):
        raise RPCError(RPC_WALLET_ERROR,
                       "Transaction contains inputs that don't belong to this wallet")
    old_fee = -(wallet.fee_of(wtx) or 0)
    old_vsize = vsize_of(wtx.tx)
    old_rate = old_fee * 1000 // old_vsize
    if rate is None:
        rate = max(old_rate + 1 + max(INCREMENTAL_RELAY_SAT_KVB, WALLET_INCREMENTAL_SAT_KVB),
                   resolve_fee_rate(node, None))
    change_script = None
    recipients: list[TransactionOutput] = []
    for out in wtx.tx.vout:
        key = wallet.key_for(bytes(out.script_pubkey.data))
        if key is not None and key.change and change_script is None:
            change_script = key.script
        else:
            recipients.append(TransactionOutput(out.value, Script(bytes(out.script_pubkey.data))))
    base = Transaction(version=wtx.tx.version, vin=[
        TransactionInput(inp.txid, inp.vout, sequence=inp.sequence) for inp in wtx.tx.vin
    ], vout=recipients, locktime=wtx.tx.locktime)
    opts = FundOptions(fee_rate_sat_kvb=rate, change_script=change_script)
    try:
        funded = fund(node, wallet, base, opts)
    except RPCError as exc:
        # feebumper: "Unable to create transaction. " + CreateTransaction's error, as -4.
        raise RPCError(RPC_WALLET_ERROR, f"Unable to create transaction. {exc.message}") from None
    minimum = old_fee + fee_for(INCREMENTAL_RELAY_SAT_KVB, vsize_of(funded.tx))
    if funded.fee < minimum:
        raise RPCError(RPC_INVALID_PARAMETER,
                       f"Insufficient total fee {format_money(funded.fee)}, must be at least "
                       f"{format_money(minimum)} (oldFee {format_money(old_fee)} + "
                       f"incrementalFee {format_money(minimum - old_fee)})")
    return funded, old_fee


def double_spend(node: Node, txid: str, address: Any) -> dict[str, Any]:
    """A transaction from "someone else" holding the wallet's keys: it spends exactly the
    inputs of mempool transaction `txid`, pays everything but a higher fee to `address` (or
    a key nobody holds) and replaces `txid` and its descendants in the mempool."""
    entry = node.mempool.entries.get(txid)
    if entry is None:
        raise RPCError(RPC_INVALID_ADDRESS_OR_KEY, "Transaction not in mempool")
    if address is None:
        script = p2wpkh_script(bytes(ec.PrivateKey(os.urandom(32)).sec()))
    else:
        try:
            script = script_for_address(address)
        except AddressError:
            raise RPCError(RPC_INVALID_ADDRESS_OR_KEY, f"Invalid Bitcoin address: {address}") \
                from None
    spent: list[tuple[int, bytes, Any]] = []
    for outpoint in outpoints_of(entry.tx):
        owner = None
        found = None
        for wallet in node.wallets.values():
            found = find_coin(node, wallet, outpoint)
            if found is not None and wallet.key_for(found[1]) is not None:
                owner = wallet
                break
        if owner is None or found is None:
            raise RPCError(RPC_WALLET_ERROR, f"devnode_double_spend: input {outpoint[0]}:"
                                             f"{outpoint[1]} is not spendable by a loaded wallet")
        key = owner.key_for(found[1])
        spent.append((found[0], found[1], key))
    vin = [TransactionInput(inp.txid, inp.vout, sequence=SEQUENCE_RBF) for inp in entry.tx.vin]
    total = sum(value for value, _, _ in spent)
    out = TransactionOutput(0, Script(script))
    vsize = signed_vsize(vin, [s for _, s, _ in spent], [out], 2, 0)
    evicted = [txid, *node.mempool.descendants(txid)]
    old_fees = sum(node.mempool.entries[t].fee for t in evicted)
    # Beat every BIP125 rule with room to spare: rate, absolute fee and relay increment.
    fee = max(old_fees + fee_for(INCREMENTAL_RELAY_SAT_KVB, vsize) + vsize,
              2 * entry.fee, fee_for(MIN_RELAY_SAT_KVB * 2, vsize))
    if total - fee < dust_threshold(script):
        raise RPCError(RPC_WALLET_INSUFFICIENT_FUNDS, "Insufficient funds")
    out.value = total - fee
    tx = Transaction(version=2, vin=vin, vout=[out], locktime=0)
    for index, (value, spent_script, key) in enumerate(spent):
        script_sig, witness, _ = sign_input(tx, index, key.key, spent_script, value)
        tx.vin[index].script_sig = Script(script_sig)
        tx.vin[index].witness = Witness(witness)
    verdict = node.accept(tx, unbroadcast=False)  # it came from "the network"
    if not verdict.ok:
        raise RPCError(RPC_WALLET_ERROR, f"devnode_double_spend rejected: {verdict.reason}")
    return {"txid": txid_of(tx), "hex": tx.serialize().hex(), "replaced": verdict.replaced,
            "address": address_of(script), "fee_sats": fee}
