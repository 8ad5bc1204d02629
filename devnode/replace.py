"""Replacements: the wallet's `bumpfee`/`psbtbumpfee` (Core 29's feebumper.cpp), and the
foreign double-spend fault injection."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from embit import ec
from embit.script import Script, Witness
from embit.transaction import Transaction, TransactionInput, TransactionOutput

from devnode.errors import (
    RPC_INVALID_ADDRESS_OR_KEY,
    RPC_INVALID_PARAMETER,
    RPC_MISC_ERROR,
    RPC_WALLET_ERROR,
    RPC_WALLET_INSUFFICIENT_FUNDS,
    RPCError,
)
from devnode.policy import INCREMENTAL_RELAY_SAT_KVB, MIN_RELAY_SAT_KVB, format_money
from devnode.scriptcode import AddressError, address_of, dust_threshold, script_for_address
from devnode.scripts import p2wpkh_script, sign_input
from devnode.spend import (
    MAX_TX_FEE,
    WALLET_INCREMENTAL_SAT_KVB,
    WALLET_MIN_TX_FEE_SAT_KVB,
    Funded,
    FundOptions,
    find_coin,
    fund,
    sign_with_wallet,
    signed_vsize,
)
from devnode.txutil import (
    SEQUENCE_NONFINAL,
    SEQUENCE_RBF,
    fee_for,
    outpoints_of,
    signals_rbf,
    txid_of,
    vsize_of,
)
from devnode.wallet import Wallet, WalletTx

if TYPE_CHECKING:
    from devnode.node import Node


@dataclass
class BumpOptions:
    """bumpfee's options once parsed (rpc_send.bump_options)."""

    fee_rate_sat_kvb: int | None = None  # an explicit fee_rate; None: estimate like Core
    replaceable: bool = True


def bump_fee(node: Node, wallet: Wallet, wtx: WalletTx, opts: BumpOptions) -> (
    tuple[Transaction, int, int]
):
    """bumpfee: the replacement, signed and in the mempool, the original marked as replaced
    by it (CommitTransaction's MarkReplaced). Returns (replacement, old fee, new fee)."""
    funded, old_fee = create_bump(node, wallet, wtx, opts, require_mine=True)
    signed, errors = sign_with_wallet(node, wallet, funded.tx)
    if errors:
        raise RPCError(RPC_WALLET_ERROR, "Can't sign transaction.")
    verdict = node.accept(signed, mark_replaced=True)
    if not verdict.ok:
        raise RPCError(RPC_WALLET_ERROR, f"Transaction rejected by the mempool: {verdict.reason}")
    return signed, old_fee, funded.fee


def create_bump(node: Node, wallet: Wallet, wtx: WalletTx, opts: BumpOptions, *,
                require_mine: bool) -> tuple[Funded, int]:
    """feebumper::CreateRateBumpTransaction, in Core 29's order: the original's coins, the
    preconditions, the explicit fee rate's checks, then CreateTransaction with every original
    input (new ones only confirmed), the recipients, and one change output at a random
    position. Unsigned (psbtbumpfee stops here). Returns the funded replacement and the old
    fee. `require_mine`: bumpfee (psbtbumpfee takes inputs from outside the wallet)."""
    # wallet.chain().findCoins: the chain's unspent coins and the mempool's outputs.
    values: list[int] = []
    scripts: list[bytes] = []
    for outpoint in outpoints_of(wtx.tx):
        coin = node.chain.utxo.get(outpoint) or node.mempool.coin(outpoint)
        if coin is None:
            raise RPCError(RPC_MISC_ERROR, f"{outpoint[0]}:{outpoint[1]} is already spent")
        values.append(coin.value)
        scripts.append(bytes(coin.script))
    _preconditions(node, wallet, wtx, require_mine)
    old_fee = sum(values) - sum(out.value for out in wtx.tx.vout)

    # The recipients; every change output goes (the last one's script is the new change).
    change_script: bytes | None = None
    recipients: list[TransactionOutput] = []
    for out in wtx.tx.vout:
        script = bytes(out.script_pubkey.data)
        key = wallet.key_for(script)
        if key is not None and key.change:  # OutputIsChange: ours, not in the address book
            change_script = script
        else:
            recipients.append(TransactionOutput(out.value, Script(script)))
    subtract: set[int] = set()
    if not recipients:
        if change_script is None:
            raise RPCError(RPC_INVALID_PARAMETER, "Unable to create transaction. Transaction "
                                                  "must have at least one recipient")
        # Only change: it becomes the recipient and pays the fee (a new change if needed).
        recipients = [TransactionOutput(sum(o.value for o in wtx.tx.vout), Script(change_script))]
        subtract = {0}
        change_script = None

    if opts.fee_rate_sat_kvb is not None:
        max_size = signed_vsize(list(wtx.tx.vin), scripts, list(wtx.tx.vout), wtx.tx.version,
                                wtx.tx.locktime)
        check_fee_rate(node, opts.fee_rate_sat_kvb, max_size, old_fee)
        rate = opts.fee_rate_sat_kvb
    else:
        rate = estimate_bump_rate(node, old_fee, vsize_of(wtx.tx))

    sequence = SEQUENCE_RBF if opts.replaceable else SEQUENCE_NONFINAL
    base = Transaction(version=2, vin=[
        TransactionInput(inp.txid, inp.vout, sequence=sequence) for inp in wtx.tx.vin
    ], vout=recipients, locktime=node.chain.height)  # anti-fee-sniping, as in `send`
    fund_opts = FundOptions(fee_rate_sat_kvb=rate, change_script=change_script, min_conf=1,
                            replaceable=opts.replaceable, subtract_fee_outputs=subtract,
                            external_inputs=not require_mine)
    try:
        funded = fund(node, wallet, base, fund_opts)
    except RPCError as exc:
        # feebumper: "Unable to create transaction. " + CreateTransaction's error, as -4.
        raise RPCError(RPC_WALLET_ERROR, f"Unable to create transaction. {exc.message}") from None
    return funded, old_fee


def _preconditions(node: Node, wallet: Wallet, wtx: WalletTx, require_mine: bool) -> None:
    """feebumper's PreconditionChecks."""
    if any(wallet.is_spent((wtx.txid, n)) for n in range(len(wtx.tx.vout))):
        raise RPCError(RPC_INVALID_PARAMETER, "Transaction has descendants in the wallet")
    if node.mempool.descendants(wtx.txid):
        raise RPCError(RPC_INVALID_PARAMETER, "Transaction has descendants in the mempool")
    if wallet.state(wtx).confirmations != 0:
        raise RPCError(RPC_WALLET_ERROR,
                       "Transaction has been mined, or is conflicted with a mined transaction")
    if not signals_rbf(wtx.tx):
        raise RPCError(RPC_WALLET_ERROR, "Transaction is not BIP 125 replaceable")
    if wtx.replaced_by:
        raise RPCError(RPC_WALLET_ERROR, f"Cannot bump transaction {wtx.txid} which was already "
                                         f"bumped by transaction {wtx.replaced_by}")
    if require_mine and not wallet.all_inputs_mine(wtx.tx):
        raise RPCError(RPC_WALLET_ERROR,
                       "Transaction contains inputs that don't belong to this wallet")


def check_fee_rate(node: Node, rate: int, max_size: int, old_fee: int) -> None:
    """feebumper's CheckFeeRate for an explicit fee_rate, on the original's signed size
    (Core 29: the node's incremental relay fee alone, not the wallet's 5 sat/vB)."""
    if rate < node.mempool_min_fee_sat_kvb:
        raise RPCError(RPC_WALLET_ERROR,
                       f"New fee rate ({format_money(rate)}) is lower than the minimum fee rate "
                       f"({format_money(node.mempool_min_fee_sat_kvb)}) to get into the mempool "
                       f"-- ")
    new_total = fee_for(rate, max_size)  # + the unconfirmed ancestors' bump fees (none here)
    incremental = fee_for(INCREMENTAL_RELAY_SAT_KVB, max_size)
    minimum = old_fee + incremental
    if new_total < minimum:
        raise RPCError(RPC_INVALID_PARAMETER,
                       f"Insufficient total fee {format_money(new_total)}, must be at least "
                       f"{format_money(minimum)} (oldFee {format_money(old_fee)} + "
                       f"incrementalFee {format_money(incremental)})")
    required = fee_for(max(WALLET_MIN_TX_FEE_SAT_KVB, MIN_RELAY_SAT_KVB), max_size)
    if new_total < required:
        raise RPCError(RPC_INVALID_PARAMETER, f"Insufficient total fee (cannot be less than "
                                              f"required fee {format_money(required)})")
    if new_total > MAX_TX_FEE:
        raise RPCError(RPC_WALLET_ERROR,
                       f"Specified or calculated fee {format_money(new_total)} is too high "
                       f"(cannot be higher than -maxtxfee {format_money(MAX_TX_FEE)})")


def estimate_bump_rate(node: Node, old_fee: int, old_vsize: int) -> int:
    """feebumper's EstimateFeeRate: the original's rate (rounded down) + 1 sat/kvB + the
    larger of the node's and the wallet's incremental fee (5 sat/vB), and at least the
    wallet's GetMinimumFeeRate (the estimate, else -fallbackfee, never below 1 sat/vB)."""
    rate = old_fee * 1000 // old_vsize + 1 + max(INCREMENTAL_RELAY_SAT_KVB,
                                                 WALLET_INCREMENTAL_SAT_KVB)
    wanted = node.fee_estimate_sat_kvb or node.fallback_fee_sat_kvb or 0
    return max(rate, wanted, WALLET_MIN_TX_FEE_SAT_KVB, MIN_RELAY_SAT_KVB)


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
