"""Fault injection and test helpers: the `devnode_*` RPCs (none exist in real bitcoind).

They are documented in devnode/README.md. Faults never apply to `devnode_*` calls.
"""

from __future__ import annotations

from typing import Any

from devnode.errors import RPC_INVALID_ADDRESS_OR_KEY, RPC_INVALID_PARAMETER, RPCError
from devnode.registry import Context, rpc
from devnode.replace import double_spend
from devnode.rpc_chain import parse_hash
from devnode.scriptcode import AddressError, script_for_address
from devnode.txutil import fee_rate_to_sat_per_kvb


def _count(value: Any) -> int:
    count = 1 if value is None else int(value)
    if count < 1:
        raise RPCError(RPC_INVALID_PARAMETER, "count must be at least 1")
    return count


@rpc("devnode_fail_next", "method:str!", "code:num!", "message:str!", "count:num")
def devnode_fail_next(ctx: Context, args: list[Any]) -> bool:
    ctx.node.faults.arm_failure(args[0], int(args[1]), args[2], _count(args[3]))
    return True


@rpc("devnode_drop_reply", "method:str", "count:num")
def devnode_drop_reply(ctx: Context, args: list[Any]) -> bool:
    ctx.node.faults.arm_drop(args[0] or "sendrawtransaction", _count(args[1]))
    return True


@rpc("devnode_set_latency", "method:str!", "seconds:num!")
def devnode_set_latency(ctx: Context, args: list[Any]) -> bool:
    ctx.node.faults.set_latency(args[0], float(args[1]))
    return True


@rpc("devnode_hold", "method:str!", "seconds:num!", "count:num")
def devnode_hold(ctx: Context, args: list[Any]) -> bool:
    ctx.node.faults.arm_hold(args[0], float(args[1]), _count(args[2]))
    return True


@rpc("devnode_clear_faults")
def devnode_clear_faults(ctx: Context, args: list[Any]) -> bool:
    ctx.node.faults.clear()
    return True


@rpc("devnode_status")
def devnode_status(ctx: Context, args: list[Any]) -> dict[str, Any]:
    node = ctx.node
    return {"height": node.chain.height, "mempool": len(node.mempool.entries),
            "wallets": list(node.wallets), "restarts": node.restarts,
            "fee_estimate_sat_kvb": node.fee_estimate_sat_kvb,
            "mining_min_fee_sat_kvb": node.mining_min_fee_sat_kvb,
            "faults": node.faults.snapshot()}


@rpc("devnode_restart")
def devnode_restart(ctx: Context, args: list[Any]) -> bool:
    ctx.node.restart()
    return True


@rpc("devnode_reorg", "n:num!", "exclude:str|arr")
def devnode_reorg(ctx: Context, args: list[Any]) -> dict[str, Any]:
    depth = int(args[0])
    if not 1 <= depth <= ctx.node.chain.height:
        raise RPCError(RPC_INVALID_PARAMETER, "n must be between 1 and the chain height")
    exclude = args[1] if isinstance(args[1], list) else ([args[1]] if args[1] else [])
    return ctx.node.reorg(depth, {parse_hash(t) for t in exclude})


@rpc("devnode_double_spend", "txid:str!", "address:str")
def devnode_double_spend(ctx: Context, args: list[Any]) -> dict[str, Any]:
    return double_spend(ctx.node, parse_hash(args[0]), args[1])


@rpc("devnode_evict", "txid:str!")
def devnode_evict(ctx: Context, args: list[Any]) -> list[str]:
    return ctx.node.evict(parse_hash(args[0]))


@rpc("devnode_ledger", "address:str")
def devnode_ledger(ctx: Context, args: list[Any]) -> list[dict[str, Any]]:
    if args[0] is not None:
        try:
            script_for_address(args[0])
        except AddressError:
            raise RPCError(RPC_INVALID_ADDRESS_OR_KEY, f"Invalid Bitcoin address: {args[0]}") \
                from None
    return ctx.node.ledger(args[0])


@rpc("devnode_mine", "n:num", "address:str")
def devnode_mine(ctx: Context, args: list[Any]) -> list[str]:
    count = 1 if args[0] is None else int(args[0])
    if args[1] is not None:
        try:
            script = script_for_address(args[1])
        except AddressError:
            raise RPCError(RPC_INVALID_ADDRESS_OR_KEY, "Error: Invalid address") from None
    else:
        script = ctx.wallet().new_key().script
    return ctx.node.mine(count, script)


@rpc("devnode_set_fee_estimate", "sat_per_vb:amount")
def devnode_set_fee_estimate(ctx: Context, args: list[Any]) -> bool:
    ctx.node.fee_estimate_sat_kvb = (
        None if args[0] is None else fee_rate_to_sat_per_kvb(args[0], unit="sat/vB")
    )
    return True


@rpc("devnode_set_mining_min_fee_rate", "sat_per_vb:amount")
def devnode_set_mining_min_fee_rate(ctx: Context, args: list[Any]) -> bool:
    """Blocks from generatetoaddress, devnode_mine and devnode_reorg take a mempool
    transaction only with a package (it and its unconfirmed ancestors not yet in the block)
    paying at least this rate, best ancestor score first; no argument: everything again."""
    ctx.node.mining_min_fee_sat_kvb = (
        None if args[0] is None else fee_rate_to_sat_per_kvb(args[0], unit="sat/vB")
    )
    return True
