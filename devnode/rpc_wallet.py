"""Wallet RPCs: wallets, addresses, balances, coins, locks and history."""

from __future__ import annotations

from typing import Any

from devnode.chain import COINBASE_MATURITY
from devnode.errors import (
    RPC_INVALID_ADDRESS_OR_KEY,
    RPC_INVALID_PARAMETER,
    RPC_WALLET_ALREADY_LOADED,
    RPC_WALLET_ERROR,
    RPC_WALLET_NOT_FOUND,
    RPCError,
)
from devnode.registry import Context, rpc
from devnode.rpc_chain import outpoint_arg, parse_hash
from devnode.scriptcode import AddressError, script_for_address, script_type
from devnode.txutil import Outpoint, btc, hash160, is_coinbase, tx_to_json
from devnode.wallet import ADDRESS_TYPES, Wallet, WalletTx

_UNLOADED: dict[int, dict[str, Wallet]] = {}  # id(node) -> wallets unloaded from it


def address_type_arg(value: Any, what: str = "address") -> str:
    if value is None:
        return "bech32"
    if value == "bech32m":
        raise RPCError(RPC_INVALID_ADDRESS_OR_KEY,
                       f"devnode: {what} type 'bech32m' (taproot) is not supported")
    if value not in ADDRESS_TYPES:
        raise RPCError(RPC_INVALID_ADDRESS_OR_KEY, f"Unknown {what} type '{value}'")
    return str(value)


def last_processed(ctx: Context) -> dict[str, Any]:
    return {"hash": ctx.node.chain.tip.hash, "height": ctx.node.chain.height}


def wallet_tx(ctx: Context, wallet: Wallet, value: Any) -> WalletTx:
    wtx = wallet.txs.get(parse_hash(value))
    if wtx is None:
        raise RPCError(RPC_INVALID_ADDRESS_OR_KEY, "Invalid or non-wallet transaction id")
    return wtx


# ---------------------------------------------------------------- wallets


@rpc("createwallet", "wallet_name:str!", "disable_private_keys:bool", "blank:bool",
     "passphrase:str", "avoid_reuse:bool", "descriptors:bool", "load_on_startup:bool",
     "external_signer:bool")
def createwallet(ctx: Context, args: list[Any]) -> dict[str, Any]:
    if args[0] in _UNLOADED.get(id(ctx.node), {}):
        raise RPCError(RPC_WALLET_ERROR, f"Wallet file verification failed. Failed to create "
                                         f"database path '{args[0]}'. Database already exists.")
    ctx.node.create_wallet(args[0])
    return {"name": args[0]}


@rpc("loadwallet", "filename:str!", "load_on_startup:bool")
def loadwallet(ctx: Context, args: list[Any]) -> dict[str, Any]:
    name = args[0]
    if name in ctx.node.wallets:
        raise RPCError(RPC_WALLET_ALREADY_LOADED, f'Wallet "{name}" is already loaded.')
    unloaded = _UNLOADED.get(id(ctx.node), {})
    if name not in unloaded:
        raise RPCError(RPC_WALLET_NOT_FOUND, f"Wallet file verification failed. Failed to load "
                                             f"database path '{name}'. Path does not exist.")
    wallet = unloaded.pop(name)
    # It missed everything while unloaded: rescan the chain and mempool, like bitcoind does.
    for block in ctx.node.chain.active:
        for tx in block.txs:
            wallet.sync_tx(tx)
    for entry in ctx.node.mempool.entries.values():
        wallet.sync_tx(entry.tx)
    ctx.node.wallets[name] = wallet
    return {"name": name}


@rpc("unloadwallet", "wallet_name:str", "load_on_startup:bool")
def unloadwallet(ctx: Context, args: list[Any]) -> dict[str, Any]:
    name = args[0] if args[0] is not None else ctx.wallet().name
    if name not in ctx.node.wallets:
        raise RPCError(RPC_WALLET_NOT_FOUND, "Requested wallet does not exist or is not loaded")
    _UNLOADED.setdefault(id(ctx.node), {})[name] = ctx.node.wallets.pop(name)
    return {}


@rpc("listwallets")
def listwallets(ctx: Context, args: list[Any]) -> list[str]:
    return list(ctx.node.wallets)


@rpc("getwalletinfo", wallet=True)
def getwalletinfo(ctx: Context, args: list[Any]) -> dict[str, Any]:
    wallet = ctx.wallet()
    bal = wallet.balances()
    return {
        "walletname": wallet.name, "walletversion": 169900, "format": "sqlite",
        "balance": btc(bal["trusted"]), "unconfirmed_balance": btc(bal["untrusted_pending"]),
        "immature_balance": btc(bal["immature"]), "txcount": len(wallet.txs),
        "keypoolsize": 1000, "keypoolsize_hd_internal": 1000, "paytxfee": btc(0),
        "private_keys_enabled": True, "avoid_reuse": False, "scanning": False,
        "descriptors": True, "external_signer": False, "blank": False,
        "birthtime": wallet.created, "lastprocessedblock": last_processed(ctx),
    }


# ---------------------------------------------------------------- addresses


@rpc("getnewaddress", "label:str", "address_type:str", wallet=True)
def getnewaddress(ctx: Context, args: list[Any]) -> str:
    if args[0] == "*":
        raise RPCError(-11, "Invalid label name")
    return ctx.wallet().new_key(address_type_arg(args[1]), label=args[0] or "").address


@rpc("getrawchangeaddress", "address_type:str", wallet=True)
def getrawchangeaddress(ctx: Context, args: list[Any]) -> str:
    return ctx.wallet().new_key(address_type_arg(args[0]), change=True).address


@rpc("getaddressinfo", "address:str!", wallet=True)
def getaddressinfo(ctx: Context, args: list[Any]) -> dict[str, Any]:
    wallet = ctx.wallet()
    try:
        script = script_for_address(args[0])
    except AddressError as exc:
        raise RPCError(RPC_INVALID_ADDRESS_OR_KEY, str(exc)) from None
    key = wallet.key_for(script)
    kind = script_type(script)
    out: dict[str, Any] = {"address": args[0], "scriptPubKey": script.hex(),
                           "ismine": key is not None, "solvable": key is not None}
    if key is not None:
        out["desc"] = key.descriptor(wallet.fingerprint)
        out["parent_desc"] = out["desc"]
    out.update(iswatchonly=False, isscript=kind == "scripthash",
               iswitness=kind.startswith("witness"))
    if out["iswitness"]:
        out["witness_version"] = 0 if script[0] == 0 else script[0] - 0x50
        out["witness_program"] = script[2:].hex()
    if key is not None:
        if kind == "scripthash":
            out.update(script="witness_v0_keyhash", hex="0014" + _h160(key.pub))
        out.update(pubkey=key.pub.hex(), iscompressed=True, ischange=key.change,
                   timestamp=key.created, hdkeypath=key.path.replace("h", "'"),
                   hdseedid="0" * 40, hdmasterfingerprint=wallet.fingerprint,
                   labels=[] if key.change else [wallet.labels.get(key.address, "")])
    else:
        out.update(ischange=False, labels=[])
    return out


def _h160(pub: bytes) -> str:
    return hash160(pub).hex()


# ---------------------------------------------------------------- balances and coins


@rpc("getbalance", "dummy:str", "minconf:num", "include_watchonly:bool", "avoid_reuse:bool",
     wallet=True)
def getbalance(ctx: Context, args: list[Any]) -> Any:
    if args[0] is not None and args[0] != "*":
        raise RPCError(-32, 'dummy first argument must be excluded or set to "*".')
    minconf = int(args[1] or 0)
    coins = ctx.wallet().coins()
    return btc(sum(c.value for c in coins if c.trusted and c.confirmations >= minconf))


@rpc("getreceivedbyaddress", "address:str!", "minconf:num", "include_immature_coinbase:bool",
     wallet=True)
def getreceivedbyaddress(ctx: Context, args: list[Any]) -> Any:
    """Core's GetReceived: every output to the address in wallet transactions at least
    `minconf` deep (default 1), immature coinbases left out unless asked for."""
    wallet = ctx.wallet()
    try:
        script = script_for_address(args[0])
    except AddressError:
        raise RPCError(RPC_INVALID_ADDRESS_OR_KEY, "Invalid Bitcoin address") from None
    if not wallet.is_mine(script):
        raise RPCError(RPC_WALLET_ERROR, "Address not found in wallet")
    min_depth = 1 if args[1] is None else int(args[1])
    include_immature = bool(args[2])
    total = 0
    for wtx in wallet.txs.values():
        depth = wallet.state(wtx).confirmations
        coinbase = is_coinbase(wtx.tx)
        if depth < min_depth or (coinbase and depth < 1) or (
            coinbase and depth <= COINBASE_MATURITY and not include_immature
        ):
            continue
        total += sum(out.value for out in wtx.tx.vout if bytes(out.script_pubkey.data) == script)
    return btc(total)


@rpc("getbalances", wallet=True)
def getbalances(ctx: Context, args: list[Any]) -> dict[str, Any]:
    bal = ctx.wallet().balances()
    return {"mine": {k: btc(v) for k, v in bal.items()}, "lastprocessedblock": last_processed(ctx)}


@rpc("listunspent", "minconf:num", "maxconf:num", "addresses:arr", "include_unsafe:bool",
     "query_options:obj", wallet=True)
def listunspent(ctx: Context, args: list[Any]) -> list[dict[str, Any]]:
    wallet = ctx.wallet()
    minconf = 1 if args[0] is None else int(args[0])
    maxconf = 9_999_999 if args[1] is None else int(args[1])
    wanted: set[bytes] | None = None
    if args[2]:
        wanted = set()
        for address in args[2]:
            try:
                wanted.add(script_for_address(address))
            except AddressError:
                raise RPCError(RPC_INVALID_ADDRESS_OR_KEY,
                               f"Invalid Bitcoin address: {address}") from None
    include_unsafe = True if args[3] is None else bool(args[3])
    out: list[dict[str, Any]] = []
    for coin in wallet.coins(include_locked=False):
        if not minconf <= coin.confirmations <= maxconf:
            continue
        if wanted is not None and coin.script not in wanted:
            continue
        if not coin.trusted and not include_unsafe:
            continue
        item: dict[str, Any] = {"txid": coin.outpoint[0], "vout": coin.outpoint[1],
                                "address": coin.key.address}
        if not coin.key.change:
            item["label"] = wallet.labels.get(coin.key.address, "")
        item["scriptPubKey"] = coin.script.hex()
        item["amount"] = btc(coin.value)
        item["confirmations"] = coin.confirmations
        if coin.key.addr_type == "p2sh-segwit":
            item["redeemScript"] = "0014" + _h160(coin.key.pub)
        item.update(spendable=True, solvable=True, desc=coin.key.descriptor(wallet.fingerprint),
                    parent_descs=[coin.key.parent_descriptor(wallet.root_xpub)],
                    safe=coin.trusted)
        out.append(item)
    return out


@rpc("lockunspent", "unlock:bool!", "transactions:arr", "persistent:bool", wallet=True)
def lockunspent(ctx: Context, args: list[Any]) -> bool:
    wallet = ctx.wallet()
    unlock, persistent = bool(args[0]), bool(args[2])
    if args[1] is None:
        if unlock:
            wallet.locked.clear()
        return True
    # bitcoind checks every outpoint first and changes nothing if one is wrong.
    outpoints: list[Outpoint] = []
    for item in args[1]:
        outpoint = outpoint_arg(item)
        wtx = wallet.txs.get(outpoint[0])
        if wtx is None:
            raise RPCError(RPC_INVALID_PARAMETER, "Invalid parameter, unknown transaction")
        if outpoint[1] >= len(wtx.tx.vout):
            raise RPCError(RPC_INVALID_PARAMETER, "Invalid parameter, vout index out of bounds")
        if wallet.is_spent(outpoint):
            raise RPCError(RPC_INVALID_PARAMETER, "Invalid parameter, expected unspent output")
        locked = outpoint in wallet.locked
        if unlock and not locked:
            raise RPCError(RPC_INVALID_PARAMETER, "Invalid parameter, expected locked output")
        if not unlock and locked and not persistent:
            raise RPCError(RPC_INVALID_PARAMETER, "Invalid parameter, output already locked")
        outpoints.append(outpoint)
    for outpoint in outpoints:
        if unlock:
            wallet.locked.pop(outpoint, None)
        else:
            wallet.locked[outpoint] = persistent
    return True


@rpc("listlockunspent", wallet=True)
def listlockunspent(ctx: Context, args: list[Any]) -> list[dict[str, Any]]:
    return [{"txid": txid, "vout": vout} for txid, vout in ctx.wallet().locked]


# ---------------------------------------------------------------- history


def _detail(wallet: Wallet, entry: dict[str, Any]) -> dict[str, Any]:
    """A `details` entry: sends as captured from Core 29 (no parent_descs), receives with
    the descriptor the address comes from (PushParentDescriptors)."""
    keep = ("address", "category", "amount", "label", "vout", "fee", "abandoned")
    out = {k: entry[k] for k in keep if k in entry}
    if entry["category"] != "send":
        key = wallet.key_for(script_for_address(entry["address"]))
        out["parent_descs"] = [key.parent_descriptor(wallet.root_xpub)] if key else []
    return out


@rpc("gettransaction", "txid:str!", "include_watchonly:bool", "verbose:bool", wallet=True)
def gettransaction(ctx: Context, args: list[Any]) -> dict[str, Any]:
    wallet = ctx.wallet()
    wtx = wallet_tx(ctx, wallet, args[0])
    credit = sum(o.value for o in wtx.tx.vout if wallet.is_mine(bytes(o.script_pubkey.data)))
    debit = wallet.debit(wtx.tx)
    fee = wallet.fee_of(wtx) if debit > 0 else None
    amount = credit - debit - (fee or 0)
    out: dict[str, Any] = {"amount": btc(amount)}
    if fee is not None:
        out["fee"] = btc(fee)
    out.update(wallet.tx_common(wtx))
    out["details"] = [_detail(wallet, e) for e in wallet.entries(wtx)]
    out["hex"] = wtx.tx.serialize().hex()
    if args[2]:
        out["decoded"] = tx_to_json(wtx.tx)
    out["lastprocessedblock"] = last_processed(ctx)
    return out


@rpc("listtransactions", "label:str", "count:num", "skip:num", "include_watchonly:bool",
     wallet=True)
def listtransactions(ctx: Context, args: list[Any]) -> list[dict[str, Any]]:
    wallet = ctx.wallet()
    count = 10 if args[1] is None else int(args[1])
    skip = int(args[2] or 0)
    if count < 0 or skip < 0:
        raise RPCError(RPC_INVALID_PARAMETER, "Negative count" if count < 0 else "Negative from")
    entries = [e for wtx in wallet.ordered_txs() for e in wallet.entries(wtx)]
    if args[0] not in (None, "*"):
        entries = [e for e in entries if e.get("label") == args[0]]
    end = len(entries) - skip
    return entries[max(0, end - count): max(0, end)]


@rpc("listsinceblock", "blockhash:str", "target_confirmations:num", "include_watchonly:bool",
     "include_removed:bool", "include_change:bool", "label:str", wallet=True)
def listsinceblock(ctx: Context, args: list[Any]) -> dict[str, Any]:
    wallet = ctx.wallet()
    chain = ctx.node.chain
    depth = -1
    removed: list[dict[str, Any]] = []
    include_change = bool(args[4])
    if args[0]:
        block = chain.blocks.get(parse_hash(args[0], "blockhash"))
        if block is None:
            raise RPCError(RPC_INVALID_ADDRESS_OR_KEY, "Block not found")
        stale = block
        while not chain.in_active_chain(stale.hash):
            if args[3] is not False:
                for txid in stale.txids:
                    if txid in wallet.txs:
                        removed.extend(wallet.entries(wallet.txs[txid],
                                                      include_change=include_change))
            stale = chain.blocks[stale.prev_hash]
        depth = chain.height + 1 - stale.height
    target = 1 if args[1] is None else int(args[1])
    if target < 1:
        raise RPCError(RPC_INVALID_PARAMETER, "Invalid parameter")
    transactions: list[dict[str, Any]] = []
    for wtx in wallet.ordered_txs():
        confirmations = wallet.state(wtx).confirmations
        if depth == -1 or abs(confirmations) < depth:
            entries = wallet.entries(wtx, include_change=include_change)
            if args[5] is not None:
                entries = [e for e in entries if e.get("label") == args[5]]
            transactions.extend(entries)
    last = chain.active[max(0, chain.height + 1 - target)].hash
    return {"transactions": transactions, "removed": removed, "lastblock": last}
