"""Raw transaction RPCs: create, decode, look up, test and broadcast."""

from __future__ import annotations

from typing import Any

from embit.script import Script
from embit.transaction import Transaction, TransactionInput, TransactionOutput

from devnode.errors import (
    RPC_DESERIALIZATION_ERROR,
    RPC_INVALID_ADDRESS_OR_KEY,
    RPC_INVALID_PARAMETER,
    RPCError,
)
from devnode.registry import Context, json_type, rpc
from devnode.rpc_chain import find_block, outpoint_arg, parse_hash
from devnode.scriptcode import (
    AddressError,
    DecodeError,
    address_of,
    push_data,
    script_for_address,
    script_type,
)
from devnode.txutil import (
    SEQUENCE_FINAL,
    SEQUENCE_NONFINAL,
    SEQUENCE_RBF,
    amount_to_sats,
    btc,
    fee_for,
    is_coinbase,
    tx_from_hex,
    tx_to_json,
)

DEFAULT_MAX_FEE_RATE_SAT_KVB = 10_000_000  # sendrawtransaction maxfeerate default 0.10 BTC/kvB


def decode_tx_arg(value: Any, iswitness: Any = None) -> Transaction:
    try:
        return tx_from_hex(value, try_witness=iswitness is not False,
                           try_no_witness=iswitness is not True)
    except DecodeError:
        raise RPCError(RPC_DESERIALIZATION_ERROR, "TX decode failed") from None


def parse_inputs(raw: Any, locktime: int, replaceable: bool) -> list[TransactionInput]:
    inputs: list[TransactionInput] = []
    for item in raw or []:
        txid, vout = outpoint_arg(item)
        if replaceable:
            sequence = SEQUENCE_RBF
        else:
            sequence = SEQUENCE_NONFINAL if locktime else SEQUENCE_FINAL
        if item.get("sequence") is not None:
            sequence = item["sequence"]
            if not isinstance(sequence, int) or not 0 <= sequence <= 0xFFFFFFFF:
                raise RPCError(RPC_INVALID_PARAMETER,
                               "Invalid parameter, sequence number is out of range")
        inputs.append(TransactionInput(bytes.fromhex(txid), vout, sequence=sequence))
    return inputs


def parse_outputs(raw: Any) -> list[TransactionOutput]:
    """createrawtransaction's outputs: {address: amount, "data": hex} or a list of such."""
    pairs: list[tuple[str, Any]] = []
    if isinstance(raw, dict):
        pairs = list(raw.items())
    else:
        for item in raw:
            if not isinstance(item, dict) or len(item) != 1:
                raise RPCError(RPC_INVALID_PARAMETER,
                               "Invalid parameter, key-value pair must contain exactly one key")
            pairs.extend(item.items())
    outputs: list[TransactionOutput] = []
    seen: set[str] = set()
    for name, value in pairs:
        if name == "data":
            if "data" in seen:
                raise RPCError(RPC_INVALID_PARAMETER, "Invalid parameter, duplicate key: data")
            seen.add("data")
            try:
                data = bytes.fromhex(value)
            except (TypeError, ValueError):
                raise RPCError(RPC_INVALID_PARAMETER, "Data must be hexadecimal string") from None
            outputs.append(TransactionOutput(0, Script(b"\x6a" + push_data(data))))
            continue
        try:
            script = script_for_address(name)
        except AddressError:
            raise RPCError(RPC_INVALID_ADDRESS_OR_KEY, f"Invalid Bitcoin address: {name}") from None
        if name in seen:
            raise RPCError(RPC_INVALID_PARAMETER, f"Invalid parameter, duplicated address: {name}")
        seen.add(name)
        outputs.append(TransactionOutput(amount_to_sats(value), Script(script)))
    return outputs


@rpc("createrawtransaction", "inputs:arr!", "outputs:obj|arr!", "locktime:num", "replaceable:bool")
def createrawtransaction(ctx: Context, args: list[Any]) -> str:
    locktime = int(args[2] or 0)
    if not 0 <= locktime <= 0xFFFFFFFF:
        raise RPCError(RPC_INVALID_PARAMETER, "Invalid parameter, locktime out of range")
    tx = Transaction(version=2, vin=parse_inputs(args[0], locktime, bool(args[3])),
                     vout=parse_outputs(args[1]), locktime=locktime)
    return str(tx.serialize().hex())


@rpc("decoderawtransaction", "hexstring:str!", "iswitness:bool")
def decoderawtransaction(ctx: Context, args: list[Any]) -> dict[str, Any]:
    return tx_to_json(decode_tx_arg(args[0], args[1]))


@rpc("getrawtransaction", "txid:str!", "verbose:num|bool", "blockhash:str")
def getrawtransaction(ctx: Context, args: list[Any]) -> Any:
    txid = parse_hash(args[0])
    verbosity = 0 if args[1] is None else int(args[1])
    node = ctx.node
    block = None
    if args[2] is not None:
        block = find_block(ctx, args[2])
        if txid not in block.txids:
            raise RPCError(RPC_INVALID_ADDRESS_OR_KEY,
                           "No such transaction found in the provided block. Use gettransaction "
                           "for wallet transactions.")
        tx = block.txs[block.txids.index(txid)]
    else:
        found = node.find_tx(txid)
        if found is None:
            raise RPCError(RPC_INVALID_ADDRESS_OR_KEY,
                           "No such mempool or blockchain transaction. Use gettransaction for "
                           "wallet transactions.")
        tx, block = found
    if verbosity <= 0:
        return tx.serialize().hex()
    out = tx_to_json(tx)
    out["hex"] = tx.serialize().hex()
    if args[2] is not None:
        out["in_active_chain"] = node.chain.in_active_chain(block.hash)
    if block is not None:
        out.update(blockhash=block.hash, confirmations=max(0, node.chain.confirmations(block.hash)),
                   time=block.time, blocktime=block.time)
    if verbosity >= 2 and not is_coinbase(tx):
        total = 0
        for inp, vin in zip(tx.vin, out["vin"], strict=True):
            prev = node.find_tx(bytes(inp.txid).hex())
            if prev is None:
                total = -1
                break
            spent = prev[0].vout[inp.vout]
            total += spent.value
            data = bytes(spent.script_pubkey.data)
            vin["prevout"] = {"generated": is_coinbase(prev[0]), "height": prev[1].height
                              if prev[1] is not None else -1, "value": btc(spent.value),
                              "scriptPubKey": {"hex": data.hex(), "address": address_of(data),
                                               "type": script_type(data)}}
        if total >= 0:
            out["fee"] = btc(total - sum(o.value for o in tx.vout))
    return out


def _max_fee_rate(value: Any) -> int:
    if value is None:
        return DEFAULT_MAX_FEE_RATE_SAT_KVB
    return amount_to_sats(value)  # BTC/kvB -> sat/kvB


@rpc("sendrawtransaction", "hexstring:str!", "maxfeerate:amount", "maxburnamount:amount")
def sendrawtransaction(ctx: Context, args: list[Any]) -> str:
    tx = decode_tx_arg(args[0])
    return ctx.node.broadcast(tx, _max_fee_rate(args[1]))


@rpc("testmempoolaccept", "rawtxs:arr!", "maxfeerate:amount")
def testmempoolaccept(ctx: Context, args: list[Any]) -> list[dict[str, Any]]:
    if not args[0]:
        raise RPCError(RPC_INVALID_PARAMETER, "Array must contain between 1 and 25 transactions.")
    max_rate = _max_fee_rate(args[1])
    results: list[dict[str, Any]] = []
    for raw in args[0]:
        if json_type(raw) != "string":
            raise RPCError(RPC_DESERIALIZATION_ERROR, "TX decode failed")
        tx = decode_tx_arg(raw)
        verdict = ctx.node.test_accept(tx)
        item: dict[str, Any] = {"txid": verdict.txid, "wtxid": verdict.wtxid}
        if verdict.ok and max_rate and (verdict.fee or 0) > fee_for(max_rate, verdict.vsize):
            item.update(allowed=False, **{"reject-reason": "max-fee-exceeded"})
        elif verdict.ok:
            fee = verdict.fee or 0
            item.update(allowed=True, vsize=verdict.vsize, fees={
                "base": btc(fee), "effective-feerate": btc(fee * 1000 // verdict.vsize),
                "effective-includes": [verdict.wtxid]})
        elif verdict.missing_inputs:
            item.update(allowed=False, **{"reject-reason": "missing-inputs"})
        else:
            # Core 29: reject-reason is the state's reason, reject-details its ToString()
            # (what sendrawtransaction would say).
            details = verdict.reason or ""
            item.update(allowed=False, **{"reject-reason": details.split(", ", 1)[0],
                                          "reject-details": details})
        results.append(item)
    return results


@rpc("validateaddress", "address:str!")
def validateaddress(ctx: Context, args: list[Any]) -> dict[str, Any]:
    try:
        script = script_for_address(args[0])
    except AddressError as exc:
        return {"isvalid": False, "error_locations": [], "error": str(exc)}
    out: dict[str, Any] = {"isvalid": True, "address": address_of(script),
                           "scriptPubKey": script.hex(), "isscript": script[:1] == b"\xa9"}
    witness = script[0] == 0 or 0x51 <= script[0] <= 0x60
    out["iswitness"] = witness and script_type(script) != "scripthash"
    if out["iswitness"]:
        out["witness_version"] = 0 if script[0] == 0 else script[0] - 0x50
        out["witness_program"] = script[2:].hex()
    return out
