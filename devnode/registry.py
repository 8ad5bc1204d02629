"""RPC method table, bitcoind-style argument checking, wallet routing and JSON output.

Handlers register with `@rpc("name", "arg:type!", "opt:type", wallet=True)`; `!` marks a
required argument. Arguments may come positionally or by name (JSON-RPC named params), and
wrong types fail like bitcoind: -3 "JSON value of type X is not of expected type Y".
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from devnode.errors import (
    RPC_INVALID_PARAMETER,
    RPC_METHOD_NOT_FOUND,
    RPC_MISC_ERROR,
    RPC_TYPE_ERROR,
    RPC_WALLET_NOT_FOUND,
    RPC_WALLET_NOT_SPECIFIED,
    RPCError,
)

if TYPE_CHECKING:
    from devnode.node import Node
    from devnode.wallet import Wallet

Handler = Callable[["Context", list[Any]], Any]


@dataclass
class Param:
    name: str
    kinds: tuple[str, ...]
    required: bool


@dataclass
class Method:
    name: str
    func: Handler
    params: list[Param]
    wallet: bool


METHODS: dict[str, Method] = {}


def rpc(name: str, *specs: str, wallet: bool = False) -> Callable[[Handler], Handler]:
    params = []
    for spec in specs:
        pname, _, kind = spec.partition(":")
        required = kind.endswith("!")
        params.append(Param(pname, tuple(kind.rstrip("!").split("|")), required))

    def register(func: Handler) -> Handler:
        METHODS[name] = Method(name, func, params, wallet)
        return func

    return register


@dataclass
class Context:
    node: Node
    wallet_name: str | None  # from the /wallet/<name> URL path

    def wallet(self) -> Wallet:
        """GetWalletForJSONRPCRequest: the URL's wallet, or the only loaded one."""
        wallets = self.node.wallets
        if self.wallet_name is not None:
            found = wallets.get(self.wallet_name)
            if found is None:
                raise RPCError(RPC_WALLET_NOT_FOUND,
                               "Requested wallet does not exist or is not loaded")
            return found
        if len(wallets) == 1:
            return next(iter(wallets.values()))
        if not wallets:
            raise RPCError(
                RPC_WALLET_NOT_FOUND,
                "No wallet is loaded. Load a wallet using loadwallet or create a new one with "
                "createwallet. (Note: A default wallet is no longer automatically created)",
            )
        raise RPCError(
            RPC_WALLET_NOT_SPECIFIED,
            "Multiple wallets are loaded. Please select which wallet to use by requesting the "
            "RPC through the /wallet/<walletname> URI path. Or for the CLI, specify the "
            '"-rpcwallet=<walletname>" option before the command (run "bitcoin-cli -h" for '
            "help or \"bitcoin-cli listwallets\" to see which wallets are currently loaded).",
        )


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float, Decimal)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


_KIND_TYPES = {"str": "string", "num": "number", "bool": "bool", "obj": "object",
               "arr": "array", "amount": "number"}


def _check_type(param: Param, value: Any) -> None:
    if "any" in param.kinds:
        return
    actual = json_type(value)
    allowed = {_KIND_TYPES[k] for k in param.kinds}
    if "amount" in param.kinds:
        allowed.add("string")
    if actual not in allowed:
        expected = _KIND_TYPES[param.kinds[0]]
        raise RPCError(RPC_TYPE_ERROR,
                       f"JSON value of type {actual} is not of expected type {expected}")


def usage(method: Method) -> str:
    args = " ".join(p.name if p.required else f"( {p.name} )" for p in method.params)
    return f"{method.name} {args}".rstrip() + "\n\n(devnode: see `help` and devnode/README.md)"


def call(ctx: Context, name: str, params: list[Any] | dict[str, Any]) -> Any:
    method = METHODS.get(name)
    if method is None:
        raise RPCError(RPC_METHOD_NOT_FOUND, "Method not found")
    if isinstance(params, dict):
        positional: list[Any] = [None] * len(method.params)
        names = [p.name for p in method.params]
        for key, value in params.items():
            if key not in names:
                raise RPCError(RPC_INVALID_PARAMETER, f"Unknown named parameter {key}")
            positional[names.index(key)] = value
        while positional and positional[-1] is None:
            positional.pop()
        args = positional
    else:
        args = list(params)
    if len(args) > len(method.params):
        raise RPCError(RPC_MISC_ERROR, usage(method))
    for index, param in enumerate(method.params):
        value = args[index] if index < len(args) else None
        if value is None:
            if param.required:
                raise RPCError(RPC_MISC_ERROR, usage(method))
            continue
        _check_type(param, value)
    args += [None] * (len(method.params) - len(args))
    return method.func(ctx, args)


def encode(value: Any) -> str:
    """JSON with amounts as plain numbers (Decimal -> 0.00010000), like bitcoind prints."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, (int, float, str)):
        return json.dumps(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(str(k))}:{encode(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(encode(v) for v in value) + "]"
    raise TypeError(f"cannot encode {type(value).__name__}")
