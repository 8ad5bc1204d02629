"""Wallet spending RPCs: fund, sign, send, PSBT, bumpfee/psbtbumpfee and abandon."""

from __future__ import annotations

import random
from typing import Any

from embit.script import Script
from embit.transaction import SIGHASH, Transaction, TransactionOutput

from devnode import psbt_ops
from devnode.errors import (
    RPC_INVALID_ADDRESS_OR_KEY,
    RPC_INVALID_PARAMETER,
    RPC_TYPE_ERROR,
    RPC_WALLET_ERROR,
    RPCError,
)
from devnode.policy import MIN_RELAY_SAT_KVB
from devnode.registry import Context, json_type, rpc
from devnode.replace import BumpOptions, bump_fee, create_bump
from devnode.rpc_chain import parse_hash
from devnode.rpc_rawtx import decode_tx_arg, parse_inputs, parse_outputs
from devnode.rpc_wallet import address_type_arg, wallet_tx
from devnode.scriptcode import AddressError, address_of, script_for_address
from devnode.spend import FundOptions, change_script_from, fund, send, sign_with_wallet
from devnode.txutil import amount_to_sats, btc, fee_rate_to_sat_per_kvb, txid_of
from devnode.wallet import Wallet, WalletTx

_BOOL_KEYS = {"add_inputs": "add_inputs", "include_unsafe": "include_unsafe",
              "lockUnspents": "lock_unspents", "lock_unspents": "lock_unspents",
              "replaceable": "replaceable", "includeWatching": None, "include_watching": None}
_IGNORED = {"conf_target", "estimate_mode", "input_weights", "solving_data", "max_tx_weight"}
_SIGHASH = {"ALL": SIGHASH.ALL, "NONE": SIGHASH.NONE, "SINGLE": SIGHASH.SINGLE,
            "ALL|ANYONECANPAY": 0x81, "NONE|ANYONECANPAY": 0x82, "SINGLE|ANYONECANPAY": 0x83,
            "DEFAULT": SIGHASH.ALL}


def _typed(key: str, value: Any, expected: str) -> None:
    if json_type(value) != expected:
        raise RPCError(RPC_TYPE_ERROR, f"JSON value of type {json_type(value)} for field {key} "
                                       f"is not of expected type {expected}")


def fund_options(raw: Any, tx: Transaction, *, default_add_inputs: bool = True) -> FundOptions:
    """The options object of fundrawtransaction / walletcreatefundedpsbt."""
    opts = FundOptions(add_inputs=default_add_inputs)
    if not isinstance(raw, dict):
        return opts
    if "fee_rate" in raw and "feeRate" in raw:
        raise RPCError(RPC_INVALID_PARAMETER,
                       "Cannot specify both fee_rate (sat/vB) and feeRate (BTC/kvB)")
    for key, value in raw.items():
        if value is None:
            continue
        if key in _BOOL_KEYS:
            _typed(key, value, "bool")
            attribute = _BOOL_KEYS[key]
            if attribute:
                setattr(opts, attribute, value)
        elif key in ("minconf", "maxconf", "changePosition", "change_position"):
            _typed(key, value, "number")
            if key == "minconf":
                opts.min_conf = int(value)
            elif key == "maxconf":
                opts.max_conf = int(value)
            else:
                opts.change_position = int(value)
        elif key in ("changeAddress", "change_address"):
            opts.change_script = change_script_from(value)
        elif key == "change_type":
            opts.change_type = address_type_arg(value, "change")
        elif key == "fee_rate":
            if raw.get("conf_target") is not None:
                raise RPCError(RPC_INVALID_PARAMETER, "Cannot specify both conf_target and "
                               "fee_rate. Please provide either a confirmation target in blocks "
                               "for automatic fee estimation, or an explicit fee rate.")
            opts.fee_rate_sat_kvb = fee_rate_to_sat_per_kvb(value, unit="sat/vB")
        elif key == "feeRate":
            opts.fee_rate_sat_kvb = fee_rate_to_sat_per_kvb(value, unit="BTC/kvB")
        elif key in ("subtractFeeFromOutputs", "subtract_fee_from_outputs"):
            _typed(key, value, "array")
            opts.subtract_fee_outputs = _sffo(value, tx)
        elif key not in _IGNORED:
            raise RPCError(RPC_TYPE_ERROR, f"Unexpected key {key}")
    return opts


def _sffo(items: list[Any], tx: Transaction) -> set[int]:
    addresses = [address_of(bytes(o.script_pubkey.data)) for o in tx.vout]
    found: set[int] = set()
    for item in items:
        if isinstance(item, str):
            if item not in addresses:
                raise RPCError(RPC_INVALID_PARAMETER, "Invalid parameter 'subtract fee from "
                               f"output', destination {item} not found in tx outputs")
            pos = addresses.index(item)
        elif isinstance(item, int) and not isinstance(item, bool):
            pos = item
        else:
            raise RPCError(RPC_INVALID_PARAMETER, "Invalid parameter 'subtract fee from output', "
                                                  f"invalid value type: {json_type(item)}")
        if pos in found:
            raise RPCError(RPC_INVALID_PARAMETER, "Invalid parameter 'subtract fee from output', "
                                                  f"duplicated position: {pos}")
        if pos < 0 or pos >= len(tx.vout):
            raise RPCError(RPC_INVALID_PARAMETER, "Invalid parameter 'subtract fee from output', "
                                                  f"position out of range: {pos}")
        found.add(pos)
    return found


@rpc("fundrawtransaction", "hexstring:str!", "options:obj|bool", "iswitness:bool", wallet=True)
def fundrawtransaction(ctx: Context, args: list[Any]) -> dict[str, Any]:
    wallet = ctx.wallet()
    tx = decode_tx_arg(args[0], args[2])
    funded = fund(ctx.node, wallet, tx, fund_options(args[1], tx))
    return {"hex": funded.tx.serialize().hex(), "fee": btc(funded.fee),
            "changepos": funded.change_position}


def _prevtxs(raw: Any) -> dict[tuple[str, int], tuple[int, bytes]]:
    found: dict[tuple[str, int], tuple[int, bytes]] = {}
    for item in raw or []:
        if not isinstance(item, dict):
            raise RPCError(RPC_INVALID_PARAMETER, "expected object with {\"txid'\",\"vout\","
                                                  "\"scriptPubKey\"}")
        txid = parse_hash(item.get("txid"))
        vout = item.get("vout")
        if not isinstance(vout, int) or vout < 0:
            raise RPCError(RPC_INVALID_PARAMETER, "vout cannot be negative")
        try:
            script = bytes.fromhex(item.get("scriptPubKey", ""))
        except (TypeError, ValueError):
            raise RPCError(RPC_INVALID_PARAMETER, "scriptPubKey must be hexadecimal") from None
        if item.get("amount") is None:
            raise RPCError(RPC_INVALID_PARAMETER, "Missing amount")
        found[(txid, vout)] = (amount_to_sats(item["amount"]), script)
    return found


def _sighash(value: Any) -> int:
    if value is None:
        return SIGHASH.ALL
    if value not in _SIGHASH:
        raise RPCError(RPC_INVALID_PARAMETER, f"'{value}' is not a valid sighash parameter.")
    return _SIGHASH[value]


@rpc("signrawtransactionwithwallet", "hexstring:str!", "prevtxs:arr", "sighashtype:str",
     wallet=True)
def signrawtransactionwithwallet(ctx: Context, args: list[Any]) -> dict[str, Any]:
    tx = decode_tx_arg(args[0])
    signed, errors = sign_with_wallet(ctx.node, ctx.wallet(), tx, _prevtxs(args[1]),
                                      _sighash(args[2]))
    out: dict[str, Any] = {"hex": signed.serialize().hex(), "complete": not errors}
    if errors:
        out["errors"] = errors
    return out


def _explicit_fee_rate(value: Any) -> int | None:
    if value is None:
        return None
    rate = fee_rate_to_sat_per_kvb(value, unit="sat/vB")
    if rate < MIN_RELAY_SAT_KVB:
        raise RPCError(RPC_WALLET_ERROR, f"Fee rate ({rate / 1000:.3f} sat/vB) is lower than the "
                                         "minimum fee rate setting (1.000 sat/vB)")
    return rate


def _recipient(address: Any, amount: Any) -> TransactionOutput:
    try:
        script = script_for_address(address)
    except AddressError:
        raise RPCError(RPC_INVALID_ADDRESS_OR_KEY, f"Invalid Bitcoin address: {address}") from None
    sats = amount_to_sats(amount)
    if sats <= 0:
        raise RPCError(RPC_TYPE_ERROR, "Invalid amount for send")
    return TransactionOutput(sats, Script(script))


def _send_result(tx: Transaction, verbose: Any) -> Any:
    txid = txid_of(tx)
    return {"txid": txid, "fee_reason": "Fallback fee"} if verbose else txid


@rpc("sendtoaddress", "address:str!", "amount:amount!", "comment:str", "comment_to:str",
     "subtractfeefromamount:bool", "replaceable:bool", "conf_target:num", "estimate_mode:str",
     "avoid_reuse:bool", "fee_rate:amount", "verbose:bool", wallet=True)
def sendtoaddress(ctx: Context, args: list[Any]) -> Any:
    opts = FundOptions(fee_rate_sat_kvb=_explicit_fee_rate(args[9]),
                       replaceable=args[5] is not False)
    if args[4]:
        opts.subtract_fee_outputs = {0}
    tx = send(ctx.node, ctx.wallet(), [_recipient(args[0], args[1])], opts)
    return _send_result(tx, args[10])


@rpc("sendmany", "dummy:str!", "amounts:obj!", "minconf:num", "comment:str",
     "subtractfeefrom:arr", "replaceable:bool", "conf_target:num", "estimate_mode:str",
     "fee_rate:amount", "verbose:bool", wallet=True)
def sendmany(ctx: Context, args: list[Any]) -> Any:
    if args[0] != "":
        raise RPCError(RPC_INVALID_PARAMETER, 'Dummy value must be set to ""')
    if not args[1]:
        raise RPCError(RPC_INVALID_PARAMETER, "Transaction must have at least one recipient")
    outputs = [(address, _recipient(address, amount)) for address, amount in args[1].items()]
    random.shuffle(outputs)  # bitcoind shuffles the recipients too
    opts = FundOptions(fee_rate_sat_kvb=_explicit_fee_rate(args[8]),
                       replaceable=args[5] is not False)
    subtract = set(args[4] or [])
    opts.subtract_fee_outputs = {i for i, (a, _) in enumerate(outputs) if a in subtract}
    tx = send(ctx.node, ctx.wallet(), [o for _, o in outputs], opts)
    return _send_result(tx, args[9])


# bumpfee's options as RPCTypeCheckObj checks them (None: any type, checked later).
_BUMP_OPTION_TYPES = {"confTarget": "number", "conf_target": "number", "fee_rate": None,
                      "replaceable": "bool", "estimate_mode": "string", "outputs": None,
                      "original_change_index": "number"}
_ESTIMATE_MODES = ("unset", "economical", "conservative")
MAX_CONF_TARGET = 1008  # the fee estimator's longest horizon


def bump_options(raw: Any) -> BumpOptions:
    """bumpfee_helper's option handling, in Core 29's order and words."""
    opts = BumpOptions()
    if raw is None:
        return opts
    for key, expected in _BUMP_OPTION_TYPES.items():
        value = raw.get(key)
        if value is not None and expected is not None:
            _typed(key, value, expected)
    for key in raw:
        if key not in _BUMP_OPTION_TYPES:
            raise RPCError(RPC_TYPE_ERROR, f"Unexpected key {key}")
    if "confTarget" in raw and "conf_target" in raw:
        raise RPCError(RPC_INVALID_PARAMETER, "confTarget and conf_target options should not "
                       "both be set. Use conf_target (confTarget is deprecated).")
    conf_target = raw.get("confTarget") if "confTarget" in raw else raw.get("conf_target")
    if raw.get("replaceable") is not None:
        opts.replaceable = bool(raw["replaceable"])
    estimate_mode = raw.get("estimate_mode")
    if raw.get("fee_rate") is not None:  # SetFeeEstimateMode
        if conf_target is not None:
            raise RPCError(RPC_INVALID_PARAMETER, "Cannot specify both conf_target and "
                           "fee_rate. Please provide either a confirmation target in blocks "
                           "for automatic fee estimation, or an explicit fee rate.")
        if estimate_mode is not None and estimate_mode != "unset":
            raise RPCError(RPC_INVALID_PARAMETER, "Cannot specify both estimate_mode and fee_rate")
        opts.fee_rate_sat_kvb = fee_rate_to_sat_per_kvb(raw["fee_rate"], unit="sat/vB")
    else:
        if estimate_mode is not None and str(estimate_mode).lower() not in _ESTIMATE_MODES:
            raise RPCError(RPC_INVALID_PARAMETER, 'Invalid estimate_mode parameter, must be one '
                                                  'of: "unset", "economical", "conservative"')
        if conf_target is not None and not 1 <= int(conf_target) <= MAX_CONF_TARGET:
            raise RPCError(RPC_INVALID_PARAMETER,
                           f"Invalid conf_target, must be between 1 and {MAX_CONF_TARGET}")
    outputs = raw.get("outputs")
    if isinstance(outputs, list) and not outputs:
        raise RPCError(RPC_INVALID_PARAMETER,
                       "Invalid parameter, output argument cannot be an empty array")
    change_index = raw.get("original_change_index")
    if outputs is not None and change_index is not None:
        raise RPCError(RPC_INVALID_PARAMETER, "The options 'outputs' and 'original_change_index' "
                       "are incompatible. You can only either specify a new set of outputs, or "
                       "designate a change output to be recycled.")
    for name, value in (("outputs", outputs), ("original_change_index", change_index)):
        if value is not None:
            raise RPCError(RPC_INVALID_PARAMETER,
                           f"devnode: the bumpfee option '{name}' is not supported")
    return opts


def _bump_target(ctx: Context, args: list[Any]) -> tuple[Wallet, WalletTx, BumpOptions]:
    """The wallet, then the txid (ParseHashV), the options, and only then the lookup, as
    bumpfee_helper and CreateRateBumpTransaction go."""
    wallet = ctx.wallet()
    txid = parse_hash(args[0])
    opts = bump_options(args[1])
    return wallet, wallet_tx(ctx, wallet, txid), opts


@rpc("bumpfee", "txid:str!", "options:obj", wallet=True)
def bumpfee(ctx: Context, args: list[Any]) -> dict[str, Any]:
    wallet, wtx, opts = _bump_target(ctx, args)
    new_tx, old_fee, new_fee = bump_fee(ctx.node, wallet, wtx, opts)
    return {"txid": txid_of(new_tx), "origfee": btc(old_fee), "fee": btc(new_fee), "errors": []}


@rpc("psbtbumpfee", "txid:str!", "options:obj", wallet=True)
def psbtbumpfee(ctx: Context, args: list[Any]) -> dict[str, Any]:
    """bumpfee's replacement as an unsigned PSBT; nothing is signed, sent or recorded."""
    wallet, wtx, opts = _bump_target(ctx, args)
    funded, old_fee = create_bump(ctx.node, wallet, wtx, opts, require_mine=False)
    psbt = psbt_ops.PSBT(funded.tx)
    psbt_ops.fill(ctx.node, wallet, psbt, bip32derivs=True)
    return {"psbt": psbt.to_base64(), "origfee": btc(old_fee), "fee": btc(funded.fee),
            "errors": []}


@rpc("abandontransaction", "txid:str!", wallet=True)
def abandontransaction(ctx: Context, args: list[Any]) -> None:
    wallet = ctx.wallet()
    wtx = wallet_tx(ctx, wallet, args[0])
    if wallet.state(wtx).status in ("confirmed", "mempool"):
        raise RPCError(RPC_INVALID_ADDRESS_OR_KEY, "Transaction not eligible for abandonment")
    # Like bitcoind, descendants in the wallet are abandoned with it.
    todo = [wtx.txid]
    while todo:
        current = wallet.txs[todo.pop()]
        current.abandoned = True
        for n in range(len(current.tx.vout)):
            todo.extend(t for t in wallet.spends.get((current.txid, n), ())
                        if not wallet.txs[t].abandoned)


@rpc("walletcreatefundedpsbt", "inputs:arr", "outputs:obj|arr!", "locktime:num",
     "options:obj", "bip32derivs:bool", wallet=True)
def walletcreatefundedpsbt(ctx: Context, args: list[Any]) -> dict[str, Any]:
    wallet = ctx.wallet()
    locktime = int(args[2] or 0)
    options = args[3] or {}
    replaceable = options.get("replaceable") is not False
    tx = Transaction(version=2, vin=parse_inputs(args[0], locktime, replaceable),
                     vout=parse_outputs(args[1]), locktime=locktime)
    opts = fund_options(options, tx, default_add_inputs=not tx.vin)
    funded = fund(ctx.node, wallet, tx, opts)
    psbt = psbt_ops.PSBT(funded.tx)
    psbt_ops.fill(ctx.node, wallet, psbt, bip32derivs=args[4] is not False)
    return {"psbt": psbt.to_base64(), "fee": btc(funded.fee), "changepos": funded.change_position}


@rpc("walletprocesspsbt", "psbt:str!", "sign:bool", "sighashtype:str", "bip32derivs:bool",
     "finalize:bool", wallet=True)
def walletprocesspsbt(ctx: Context, args: list[Any]) -> dict[str, Any]:
    wallet = ctx.wallet()
    psbt = psbt_ops.parse_psbt(args[0])
    psbt_ops.fill(ctx.node, wallet, psbt, bip32derivs=args[3] is not False)
    if args[1] is not False:
        psbt_ops.sign(wallet, psbt, _sighash(args[2]))
    complete = False
    if args[4] is not False:
        complete = psbt_ops.finalize(psbt)
    out: dict[str, Any] = {"psbt": psbt.to_base64(), "complete": complete}
    if complete:
        final = psbt_ops.extract(psbt)
        if final is None:
            out["complete"] = False
        else:
            out["hex"] = final.serialize().hex()
    return out


@rpc("finalizepsbt", "psbt:str!", "extract:bool")
def finalizepsbt(ctx: Context, args: list[Any]) -> dict[str, Any]:
    psbt = psbt_ops.parse_psbt(args[0])
    complete = psbt_ops.finalize(psbt)
    final = psbt_ops.extract(psbt) if complete else None
    if final is not None and args[1] is not False:
        return {"hex": final.serialize().hex(), "complete": True}
    return {"psbt": psbt.to_base64(), "complete": final is not None}


@rpc("decodepsbt", "psbt:str!")
def decodepsbt(ctx: Context, args: list[Any]) -> dict[str, Any]:
    return psbt_ops.decode(psbt_ops.parse_psbt(args[0]))
