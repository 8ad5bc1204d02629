"""Blockchain, mempool, mining and utility RPCs."""

from __future__ import annotations

import time
from typing import Any

from embit.descriptor import Descriptor
from embit.descriptor.checksum import checksum

from devnode.chain import Block, MempoolEntry
from devnode.errors import (
    RPC_DESERIALIZATION_ERROR,
    RPC_INVALID_ADDRESS_OR_KEY,
    RPC_INVALID_PARAMETER,
    RPC_TYPE_ERROR,
    RPC_VERIFY_ERROR,
    RPCError,
)
from devnode.mining import BlockInvalid
from devnode.policy import MIN_RELAY_SAT_KVB
from devnode.registry import METHODS, Context, json_type, rpc, usage
from devnode.scriptcode import AddressError, DecodeError, script_for_address, script_pubkey_json
from devnode.txutil import Outpoint, btc, is_coinbase, signals_rbf, tx_from_hex, tx_to_json

REGTEST_DIFFICULTY = 4.656542373906925e-10


def parse_hash(value: Any, name: str = "txid") -> str:
    """ParseHashV: 64 hex characters, else -8 with bitcoind's wording."""
    if not isinstance(value, str):
        raise RPCError(RPC_INVALID_PARAMETER, f"{name} must be hexadecimal string (not '{value}')")
    if len(value) != 64:
        raise RPCError(RPC_INVALID_PARAMETER,
                       f"{name} must be of length 64 (not {len(value)}, for '{value}')")
    try:
        bytes.fromhex(value)
    except ValueError:
        raise RPCError(RPC_INVALID_PARAMETER,
                       f"{name} must be hexadecimal string (not '{value}')") from None
    return value.lower()


def outpoint_arg(item: Any) -> Outpoint:
    """A {"txid", "vout"} argument, checked with bitcoind's messages."""
    if not isinstance(item, dict):
        raise RPCError(RPC_INVALID_PARAMETER, "Invalid parameter, expected object")
    txid = parse_hash(item.get("txid"))
    vout = item.get("vout")
    if not isinstance(vout, int) or isinstance(vout, bool):
        raise RPCError(RPC_INVALID_PARAMETER, "Invalid parameter, missing vout key")
    if vout < 0:
        raise RPCError(RPC_INVALID_PARAMETER, "Invalid parameter, vout cannot be negative")
    return txid, vout


def _chainwork(height: int) -> str:
    return f"{2 * (height + 1):064x}"  # regtest: every block is 2 units of work


def block_header_json(ctx: Context, block: Block) -> dict[str, Any]:
    chain = ctx.node.chain
    out: dict[str, Any] = {
        "hash": block.hash, "confirmations": chain.confirmations(block.hash),
        "height": block.height, "version": int.from_bytes(block.header[:4], "little"),
        "versionHex": block.header[:4][::-1].hex(), "merkleroot": block.merkle_root,
        "time": block.time,
        "mediantime": chain.median_time_past(block.height) if chain.in_active_chain(block.hash)
        else block.time,
        "nonce": block.nonce, "bits": "207fffff", "difficulty": REGTEST_DIFFICULTY,
        "chainwork": _chainwork(block.height), "nTx": len(block.txs),
    }
    if block.height > 0:
        out["previousblockhash"] = block.prev_hash
    if chain.in_active_chain(block.hash) and block.height < chain.height:
        out["nextblockhash"] = chain.active[block.height + 1].hash
    return out


def find_block(ctx: Context, value: Any) -> Block:
    block = ctx.node.chain.blocks.get(parse_hash(value, "blockhash"))
    if block is None:
        raise RPCError(RPC_INVALID_ADDRESS_OR_KEY, "Block not found")
    return block


@rpc("getblockchaininfo")
def getblockchaininfo(ctx: Context, args: list[Any]) -> dict[str, Any]:
    chain = ctx.node.chain
    size = sum(b.size for b in chain.active)
    return {
        "chain": "regtest", "blocks": chain.height, "headers": chain.height,
        "bestblockhash": chain.tip.hash, "bits": "207fffff",
        "target": "7fffff0000000000000000000000000000000000000000000000000000000000",
        "difficulty": REGTEST_DIFFICULTY, "time": chain.tip.time,
        "mediantime": chain.median_time_past(), "verificationprogress": 1,
        "initialblockdownload": False, "chainwork": _chainwork(chain.height),
        "size_on_disk": size, "pruned": False, "warnings": [],
    }


@rpc("getblockcount")
def getblockcount(ctx: Context, args: list[Any]) -> int:
    return ctx.node.chain.height


@rpc("getbestblockhash")
def getbestblockhash(ctx: Context, args: list[Any]) -> str:
    return ctx.node.chain.tip.hash


@rpc("getblockhash", "height:num!")
def getblockhash(ctx: Context, args: list[Any]) -> str:
    height = int(args[0])
    if not 0 <= height <= ctx.node.chain.height:
        raise RPCError(RPC_INVALID_PARAMETER, "Block height out of range")
    return ctx.node.chain.active[height].hash


@rpc("getblockheader", "blockhash:str!", "verbose:bool")
def getblockheader(ctx: Context, args: list[Any]) -> Any:
    block = find_block(ctx, args[0])
    if args[1] is False:
        return block.header.hex()
    return block_header_json(ctx, block)


@rpc("getblock", "blockhash:str!", "verbosity:num|bool")
def getblock(ctx: Context, args: list[Any]) -> Any:
    block = find_block(ctx, args[0])
    verbosity = 1 if args[1] is None else int(args[1])
    if verbosity <= 0:
        return block.serialize().hex()
    out = block_header_json(ctx, block)
    out.update(strippedsize=block.stripped_size, size=block.size, weight=block.weight)
    if verbosity == 1:
        out["tx"] = list(block.txids)
        return out
    txs = []
    for tx in block.txs:
        item = tx_to_json(tx)
        if not is_coinbase(tx):
            fee = _fee_in_chain(ctx, tx)
            if fee is not None:
                item["fee"] = btc(fee)
        item["hex"] = tx.serialize().hex()
        txs.append(item)
    out["tx"] = txs
    return out


def _fee_in_chain(ctx: Context, tx: Any) -> int | None:
    total = 0
    for inp in tx.vin:
        found = ctx.node.find_tx(bytes(inp.txid).hex())
        if found is None:
            return None
        total += found[0].vout[inp.vout].value
    return total - sum(out.value for out in tx.vout)


@rpc("getnetworkinfo")
def getnetworkinfo(ctx: Context, args: list[Any]) -> dict[str, Any]:
    return {
        "version": 280000, "subversion": "/Satoshi:28.0.0(devnode)/", "protocolversion": 70016,
        "localservices": "0000000000000c09", "localservicesnames": ["NETWORK", "WITNESS"],
        "localrelay": True, "timeoffset": 0, "networkactive": True, "connections": 0,
        "connections_in": 0, "connections_out": 0, "networks": [],
        "relayfee": btc(1000), "incrementalfee": btc(1000), "localaddresses": [],
        "warnings": [],
    }


def mempool_entry_json(ctx: Context, entry: MempoolEntry) -> dict[str, Any]:
    pool = ctx.node.mempool
    ancestors = pool.ancestors(entry.txid)
    descendants = pool.descendants(entry.txid)
    anc = [pool.entries[t] for t in ancestors]
    desc = [pool.entries[t] for t in descendants]
    return {
        "vsize": entry.vsize, "weight": entry.weight, "time": entry.time, "height": entry.height,
        "descendantcount": len(desc) + 1,
        "descendantsize": entry.vsize + sum(e.vsize for e in desc),
        "ancestorcount": len(anc) + 1, "ancestorsize": entry.vsize + sum(e.vsize for e in anc),
        "wtxid": entry.wtxid,
        "fees": {"base": btc(entry.fee), "modified": btc(entry.fee),
                 "ancestor": btc(entry.fee + sum(e.fee for e in anc)),
                 "descendant": btc(entry.fee + sum(e.fee for e in desc))},
        "depends": pool.parents(entry.txid), "spentby": pool.children(entry.txid),
        "bip125-replaceable": signals_rbf(entry.tx) or any(signals_rbf(e.tx) for e in anc),
        "unbroadcast": entry.unbroadcast,
    }


@rpc("getmempoolentry", "txid:str!")
def getmempoolentry(ctx: Context, args: list[Any]) -> dict[str, Any]:
    entry = ctx.node.mempool.entries.get(parse_hash(args[0]))
    if entry is None:
        raise RPCError(RPC_INVALID_ADDRESS_OR_KEY, "Transaction not in mempool")
    return mempool_entry_json(ctx, entry)


@rpc("getrawmempool", "verbose:bool", "mempool_sequence:bool")
def getrawmempool(ctx: Context, args: list[Any]) -> Any:
    entries = ctx.node.mempool.entries
    if args[0]:
        return {txid: mempool_entry_json(ctx, e) for txid, e in entries.items()}
    return list(entries)


@rpc("getmempoolinfo")
def getmempoolinfo(ctx: Context, args: list[Any]) -> dict[str, Any]:
    entries = ctx.node.mempool.entries.values()
    return {
        "loaded": True, "size": len(entries), "bytes": sum(e.vsize for e in entries),
        "usage": sum(e.weight for e in entries), "total_fee": btc(sum(e.fee for e in entries)),
        "maxmempool": 300_000_000,
        "mempoolminfee": btc(max(MIN_RELAY_SAT_KVB, ctx.node.mempool_min_fee_sat_kvb)),
        "minrelaytxfee": btc(MIN_RELAY_SAT_KVB),
        "incrementalrelayfee": btc(1000),
        "unbroadcastcount": sum(1 for e in entries if e.unbroadcast),
        "fullrbf": ctx.node.full_rbf,
    }


@rpc("gettxout", "txid:str!", "n:num!", "include_mempool:bool")
def gettxout(ctx: Context, args: list[Any]) -> dict[str, Any] | None:
    outpoint = (parse_hash(args[0]), int(args[1]))
    include_mempool = True if args[2] is None else bool(args[2])
    node = ctx.node
    coin = node.chain.utxo.get(outpoint)
    confirmations = 0
    if include_mempool:
        if outpoint in node.mempool.spends:
            return None
        if coin is None:
            coin = node.mempool.coin(outpoint)
    if coin is None:
        return None
    if coin.height <= node.chain.height:
        confirmations = node.chain.height - coin.height + 1
    return {
        "bestblock": node.chain.tip.hash, "confirmations": confirmations,
        "value": btc(coin.value), "scriptPubKey": script_pubkey_json(coin.script),
        "coinbase": coin.coinbase,
    }


@rpc("estimatesmartfee", "conf_target:num!", "estimate_mode:str")
def estimatesmartfee(ctx: Context, args: list[Any]) -> dict[str, Any]:
    target = int(args[0])
    if not 1 <= target <= 1008:
        raise RPCError(RPC_INVALID_PARAMETER, "Invalid conf_target, must be between 1 and 1008")
    mode = (args[1] or "unset").lower()
    if mode not in ("unset", "economical", "conservative"):
        raise RPCError(RPC_INVALID_PARAMETER, 'Invalid estimate_mode parameter, must be one of: '
                                              '"unset", "economical", "conservative"')
    rate = ctx.node.fee_estimate_sat_kvb
    if rate is None:
        # A fresh regtest node has seen too few transactions confirm to estimate anything.
        return {"errors": ["Insufficient data or no feerate found"], "blocks": 0}
    return {"feerate": btc(rate), "blocks": max(2, target)}


@rpc("generatetoaddress", "nblocks:num!", "address:str!", "maxtries:num")
def generatetoaddress(ctx: Context, args: list[Any]) -> list[str]:
    try:
        script = script_for_address(args[1])
    except AddressError:
        raise RPCError(RPC_INVALID_ADDRESS_OR_KEY, "Error: Invalid address") from None
    return ctx.node.mine(int(args[0]), script)


def _descriptor_script(text: str) -> bytes | None:
    """getScriptFromDescriptor for what the devnode can expand: addr(), raw() and embit's
    single-key descriptors; None when `text` does not parse as a descriptor."""
    body, _, check = text.partition("#")
    if check and checksum(body) != check:
        return None
    if body.startswith("addr(") and body.endswith(")"):
        try:
            return script_for_address(body[5:-1])
        except AddressError:
            return None
    if body.startswith("raw(") and body.endswith(")"):
        try:
            return bytes.fromhex(body[4:-1])
        except ValueError:
            return None
    try:
        desc = Descriptor.from_string(body)
    except Exception as exc:  # embit raises several types for text that is no descriptor
        if "Hardened derivation" in str(exc):
            raise RPCError(RPC_INVALID_ADDRESS_OR_KEY,
                           "Cannot derive script without private keys") from None
        return None
    if desc.num_branches > 1:
        raise RPCError(RPC_INVALID_PARAMETER, "Multipath descriptor not accepted")
    if desc.is_wildcard:
        raise RPCError(RPC_INVALID_PARAMETER,
                       "Ranged descriptor not accepted. Maybe pass through deriveaddresses first?")
    return bytes(desc.script_pubkey().data)


def _is_txid(text: str) -> bool:
    if len(text) != 64:
        return False
    try:
        bytes.fromhex(text)
    except ValueError:
        return False
    return True


@rpc("generateblock", "output:str!", "transactions:arr!", "submit:bool")
def generateblock(ctx: Context, args: list[Any]) -> dict[str, Any]:
    """Mine one block to `output` with exactly these transactions, in this order: txids of
    mempool transactions or raw transactions (which need not be in the mempool)."""
    script = _descriptor_script(args[0])
    if script is None:
        try:
            script = script_for_address(args[0])
        except AddressError:
            raise RPCError(RPC_INVALID_ADDRESS_OR_KEY,
                           "Error: Invalid address or descriptor") from None
    node = ctx.node
    txs = []
    for item in args[1]:
        if not isinstance(item, str):
            raise RPCError(RPC_TYPE_ERROR, f"JSON value of type {json_type(item)} is not of "
                                           "expected type string")
        if _is_txid(item):
            entry = node.mempool.entries.get(item.lower())
            if entry is None:
                raise RPCError(RPC_INVALID_ADDRESS_OR_KEY, f"Transaction {item} not in mempool.")
            txs.append(entry.tx)
            continue
        try:
            txs.append(tx_from_hex(item))
        except DecodeError:
            raise RPCError(RPC_DESERIALIZATION_ERROR, f"Transaction decode failed for {item}. "
                                                      "Make sure the tx has at least one input.") \
                from None
    submit = args[2] is not False
    try:
        block = node.generate_block(script, txs, submit=submit)
    except BlockInvalid as invalid:
        raise RPCError(RPC_VERIFY_ERROR, f"TestBlockValidity failed: {invalid}") from None
    out: dict[str, Any] = {"hash": block.hash}
    if not submit:
        out["hex"] = block.serialize().hex()
    return out


@rpc("uptime")
def uptime(ctx: Context, args: list[Any]) -> int:
    return int(time.time() - ctx.node.started)


@rpc("help", "command:str")
def help_(ctx: Context, args: list[Any]) -> str:
    if args[0]:
        method = METHODS.get(args[0])
        return usage(method) if method else f"help: unknown command: {args[0]}"
    return "\n".join(sorted(METHODS))


@rpc("stop")
def stop(ctx: Context, args: list[Any]) -> str:
    # The devnode is stopped by its owner (SIGTERM or RunningDevnode.stop); say so.
    return "devnode: stop is not supported over RPC; send SIGTERM"
