"""The project's bitcoind client (docs/architecture.md §8): one class over python-bitcoinrpc's
`AuthServiceProxy`.

- A fresh HTTP connection per call: the proxy is not thread safe and a kept-alive socket
  that bitcoind closed while idle breaks the next call.
- Explicit timeouts on every call.
- Integer satoshis in and out; Decimal BTC only on the wire.
- Errors become the typed exceptions of `shared.node.errors`.
- Read-only calls are retried on connection errors (they change nothing, so a retry is
  harmless). Nothing else is retried, and `sendrawtransaction` never is: after a timeout the
  outcome is unknown, and the caller's rebroadcast of the persisted bytes is the retry.
- The URL's password never appears in logs or exception messages.
- Only what the product (api/, workers/, shared/) calls. Mining, wallet sends, fee bumps,
  signing as the external signer and the simulated node's faults are on
  `cli.regtest_node.RegtestNode`, the subclass the demo, tests, bench and chaos suite use.
"""

from __future__ import annotations

import base64
import http.client
import logging
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bitcoinrpc.authproxy import AuthServiceProxy, JSONRPCException

from shared.node.amounts import (
    btc_kvb_to_sat_vb_ceil,
    btc_to_sats,
    sat_vb_to_btc_kvb,
    sats_to_btc,
)
from shared.node.errors import (
    AuthFailed,
    InvalidParameter,
    NodeError,
    NodeUnavailable,
    NotFound,
    WalletError,
    classify,
)

if TYPE_CHECKING:
    from shared.infra.settings import Settings

log = logging.getLogger(__name__)

# Calls that change nothing on the node: safe to repeat after a connection error.
READ_ONLY_METHODS = frozenset({
    "getblockchaininfo", "getblockcount", "getbestblockhash", "getblockhash", "getblock",
    "getblockheader", "getnetworkinfo", "getmempoolinfo", "getwalletinfo", "getbalance",
    "getbalances", "listunspent", "listlockunspent", "listwallets", "getaddressinfo",
    "validateaddress", "createrawtransaction", "decoderawtransaction", "decodepsbt",
    "signrawtransactionwithwallet", "walletprocesspsbt", "finalizepsbt", "testmempoolaccept",
    "getrawtransaction", "gettransaction", "getmempoolentry", "getrawmempool",
    "estimatesmartfee", "gettxout", "listtransactions", "listsinceblock", "uptime", "help",
    # Builds a PSBT only: nothing is signed, sent, stored or locked.
    "psbtbumpfee",
})
# sendrawtransaction is never in it (docs/architecture.md §8): a unit test holds that.

RETRY_BACKOFF_SECONDS = 0.2


@dataclass(frozen=True)
class FundedTx:
    hex: str
    fee_sats: int
    change_position: int  # -1 when no change output was added


@dataclass(frozen=True)
class FundedPsbt:
    psbt: str
    fee_sats: int
    change_position: int


@dataclass(frozen=True)
class BumpPsbt:
    psbt: str
    old_fee_sats: int
    fee_sats: int


@dataclass(frozen=True)
class TxOutput:
    address: str | None
    value_sats: int
    n: int


@dataclass(frozen=True)
class DecodedTx:
    txid: str
    inputs: list[str]  # "txid:vout"
    outputs: list[TxOutput]
    vsize: int


def redact(url: str) -> str:
    """The URL with its password replaced by `***`, for messages and logs.

    Only the userinfo of the authority changes: everything after the last '@' before the
    path (as `urllib.parse.urlsplit` reads it, so a password with a raw '@' is hidden whole),
    and the rest of the text is kept byte for byte (host case, IPv6 brackets, path, query).
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    end = min((i for i in map(rest.find, "/?#") if i >= 0), default=len(rest))
    userinfo, at, hostport = rest[:end].rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:***@{hostport}{rest[end:]}"


def parse_outpoint(outpoint: str) -> tuple[str, int]:
    txid, sep, vout = outpoint.rpartition(":")
    if not sep or len(txid) != 64 or not vout.isdigit():
        raise ValueError(f"not an outpoint 'txid:vout': {outpoint!r}")
    return txid, int(vout)


def outpoint_objects(outpoints: list[str]) -> list[dict[str, Any]]:
    return [{"txid": t, "vout": n} for t, n in map(parse_outpoint, outpoints)]


# python-bitcoinrpc needs credentials in the URL it is given (it builds a header from them);
# the connection below replaces that header with the real one.
_PLACEHOLDER_USERINFO = "rpc:sent-by-the-connection"


class _AuthorizingConnection(http.client.HTTPConnection):
    """An HTTP connection that sends `auth_header` as the Authorization header of every
    request, in place of whatever header the caller (python-bitcoinrpc) built."""

    def __init__(self, host: str, port: int, *, auth_header: bytes, **kwargs: Any) -> None:
        super().__init__(host, port, **kwargs)
        self.auth_header = auth_header

    def request(self, method: str, url: str, body: Any = None,
                headers: Mapping[str, Any] | None = None, *,
                encode_chunked: bool = False) -> None:
        sent = {k: v for k, v in (headers or {}).items() if k.lower() != "authorization"}
        sent["Authorization"] = self.auth_header
        super().request(method, url, body, sent, encode_chunked=encode_chunked)


class _AuthorizingHTTPSConnection(_AuthorizingConnection, http.client.HTTPSConnection):
    """The same over TLS."""


class NodeClient:
    def __init__(self, url: str, *, timeout: float = 30.0, read_retries: int = 2) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not a bitcoind RPC URL: {redact(url)}")
        self._parts = parts
        # python-bitcoinrpc builds the Authorization header from the URL without
        # percent-decoding it; rpcpasswords often contain '/', '+' or '@', which must be
        # percent-encoded in a URL. So the header is built here from the decoded values and
        # sent by the connection (`_AuthorizingConnection`); the proxy gets a URL with only
        # placeholder credentials, so the real password never reaches python-bitcoinrpc.
        user = urllib.parse.unquote(parts.username or "")
        password = urllib.parse.unquote(parts.password or "")
        self._auth_header = b"Basic " + base64.b64encode(f"{user}:{password}".encode())
        hostport = parts.netloc.rpartition("@")[2]
        self._proxy_url = f"{parts.scheme}://{_PLACEHOLDER_USERINFO}@{hostport}{parts.path}"
        self.safe_url = redact(url)
        self.timeout = timeout
        self.read_retries = read_retries

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> NodeClient:
        if settings is None:
            from shared.infra.settings import get_settings

            settings = get_settings()
        return cls(settings.bitcoind_url.get_secret_value(),
                   timeout=settings.node_timeout_seconds)

    def __repr__(self) -> str:
        return f"NodeClient({self.safe_url!r}, timeout={self.timeout})"

    # ------------------------------------------------------------ raw calls

    def call(self, method: str, *params: Any) -> Any:
        """One JSON-RPC call; typed errors; read-only methods retried on connection errors."""
        retries = self.read_retries if method in READ_ONLY_METHODS else 0
        for attempt in range(retries + 1):
            try:
                return self._call_once(method, params)
            except NodeUnavailable:
                if attempt >= retries:
                    raise
                time.sleep(RETRY_BACKOFF_SECONDS * (2**attempt))
        raise AssertionError("unreachable")

    def _connection(self) -> http.client.HTTPConnection:
        host, port = self._parts.hostname or "", self._parts.port
        if self._parts.scheme == "https":
            return _AuthorizingHTTPSConnection(host, port or 443, timeout=self.timeout,
                                               auth_header=self._auth_header)
        return _AuthorizingConnection(host, port or 80, timeout=self.timeout,
                                      auth_header=self._auth_header)

    def _call_once(self, method: str, params: tuple[Any, ...]) -> Any:
        conn = self._connection()
        started = time.monotonic()
        try:
            proxy = AuthServiceProxy(self._proxy_url, method, self.timeout, conn)
            result = proxy(*params)
        except JSONRPCException as exc:
            error = exc.error if isinstance(exc.error, dict) else {}
            code = error.get("code")
            message = str(error.get("message", ""))
            if code == -342:  # python-bitcoinrpc: an HTTP reply without JSON
                if "401" in message:
                    raise AuthFailed(f"{method}: rejected credentials for {self.safe_url}",
                                     None) from None
                raise NodeUnavailable(f"{method}: {message} from {self.safe_url}", None) from None
            if code == -343:
                raise NodeUnavailable(f"{method}: reply without a result from {self.safe_url}",
                                      None) from None
            raise classify(code, message) from None
        except (OSError, http.client.HTTPException, ValueError) as exc:
            # Refused, reset, timed out, closed without a reply, or not JSON at all: the
            # call may or may not have happened. `from None` keeps the URL out of tracebacks.
            raise NodeUnavailable(
                f"{method}: {type(exc).__name__}: {exc} (node {self.safe_url})", None
            ) from None
        finally:
            conn.close()
            log.debug("node %s took %.1f ms", method, (time.monotonic() - started) * 1000)
        return result

    # ------------------------------------------------------------ chain

    def get_blockchain_info(self) -> dict[str, Any]:
        return dict(self.call("getblockchaininfo"))

    def get_best_block_hash(self) -> str:
        return str(self.call("getbestblockhash"))

    def get_wallet_info(self) -> dict[str, Any]:
        return dict(self.call("getwalletinfo"))

    def get_balance_sats(self) -> int:
        """Trusted spendable balance (bitcoind's getbalance)."""
        return btc_to_sats(self.call("getbalance"))

    def get_address_info(self, address: str) -> dict[str, Any]:
        return dict(self.call("getaddressinfo", address))

    def estimate_fee_rate_sat_vb(self, conf_target: int) -> int | None:
        """Whole sat/vB (rounded up), or None when the node has no estimate (fresh regtest)."""
        result = self.call("estimatesmartfee", conf_target)
        rate = result.get("feerate")
        return None if rate is None else btc_kvb_to_sat_vb_ceil(rate)

    # ------------------------------------------------------------ building and signing

    def create_raw_transaction(self, outputs: dict[str, int],
                               inputs: list[str] | None = None) -> str:
        outs = {address: sats_to_btc(sats) for address, sats in outputs.items()}
        return str(self.call("createrawtransaction", outpoint_objects(inputs or []), outs))

    def fund_raw_transaction(self, raw_hex: str, *, fee_rate_sat_vb: int,
                             lock_unspents: bool = True, replaceable: bool = True,
                             add_inputs: bool = True) -> FundedTx:
        options = {"fee_rate": fee_rate_sat_vb, "lockUnspents": lock_unspents,
                   "replaceable": replaceable, "add_inputs": add_inputs}
        result = self.call("fundrawtransaction", raw_hex, options)
        return FundedTx(str(result["hex"]), btc_to_sats(result["fee"]), int(result["changepos"]))

    def sign_raw_transaction_with_wallet(self, raw_hex: str) -> str:
        result = self.call("signrawtransactionwithwallet", raw_hex)
        if not result.get("complete"):
            problems = "; ".join(f"{e.get('txid')}:{e.get('vout')} {e.get('error')}"
                                 for e in result.get("errors", []))
            raise WalletError(f"signing incomplete: {problems or 'unknown reason'}")
        return str(result["hex"])

    def decode_raw_transaction(self, raw_hex: str) -> DecodedTx:
        result = self.call("decoderawtransaction", raw_hex)
        outputs = []
        for out in result["vout"]:
            script = out.get("scriptPubKey", {})
            address = script.get("address") or (script.get("addresses") or [None])[0]
            outputs.append(TxOutput(address, btc_to_sats(out["value"]), int(out["n"])))
        inputs = [f"{vin['txid']}:{vin['vout']}" for vin in result["vin"] if "txid" in vin]
        return DecodedTx(str(result["txid"]), inputs, outputs, int(result["vsize"]))

    def test_mempool_accept(self, raw_hex: str) -> dict[str, Any]:
        return dict(self.call("testmempoolaccept", [raw_hex])[0])

    def send_raw_transaction(self, raw_hex: str, *, max_fee_rate_sat_vb: int | None = None) -> str:
        """Broadcast. Never retried here: NodeUnavailable means "outcome unknown"."""
        if max_fee_rate_sat_vb is None:
            return str(self.call("sendrawtransaction", raw_hex))
        return str(self.call("sendrawtransaction", raw_hex,
                             sat_vb_to_btc_kvb(max_fee_rate_sat_vb)))

    # ------------------------------------------------------------ looking things up

    def get_transaction(self, txid: str) -> dict[str, Any] | None:
        """The wallet's view of `txid` (confirmations < 0 when conflicted), or None."""
        try:
            return dict(self.call("gettransaction", txid))
        except NotFound:
            return None

    def get_raw_transaction(self, txid: str) -> dict[str, Any] | None:
        try:
            return dict(self.call("getrawtransaction", txid, True))
        except NotFound:
            return None

    def get_mempool_entry(self, txid: str) -> dict[str, Any] | None:
        try:
            return dict(self.call("getmempoolentry", txid))
        except NotFound:
            return None

    def get_tx_out(self, outpoint: str, include_mempool: bool = True) -> dict[str, Any] | None:
        txid, vout = parse_outpoint(outpoint)
        result = self.call("gettxout", txid, vout, include_mempool)
        return None if result is None else dict(result)

    def list_since_block(self, blockhash: str | None = None) -> dict[str, Any]:
        if blockhash is None:
            return dict(self.call("listsinceblock"))
        return dict(self.call("listsinceblock", blockhash))

    # ------------------------------------------------------------ coin locks

    def unlock_unspent(self, outpoints: list[str]) -> None:
        """Unlock; outpoints already unlocked, spent or unknown are fine (no error)."""
        if not outpoints:
            return  # an empty list must never become bitcoind's "unlock everything"
        try:
            self.call("lockunspent", True, outpoint_objects(outpoints))
            return
        except InvalidParameter:
            pass  # bitcoind changes nothing if one outpoint is not locked: go one by one
        for outpoint in outpoints:
            try:
                self.call("lockunspent", True, outpoint_objects([outpoint]))
            except InvalidParameter as exc:
                log.debug("unlock %s: %s", outpoint, exc.message)

    def lock_unspent(self, outpoints: list[str]) -> None:
        if not outpoints:
            return
        if self.call("lockunspent", False, outpoint_objects(outpoints)) is not True:
            raise WalletError("lockunspent returned false")

    def list_lock_unspent(self) -> list[str]:
        return [f"{o['txid']}:{o['vout']}" for o in self.call("listlockunspent")]

    # ------------------------------------------------------------ PSBT

    def wallet_create_funded_psbt(self, outputs: dict[str, int], *, fee_rate_sat_vb: int,
                                  lock_unspents: bool = True, inputs: list[str] | None = None,
                                  add_inputs: bool = True) -> FundedPsbt:
        outs = {address: sats_to_btc(sats) for address, sats in outputs.items()}
        options = {"fee_rate": fee_rate_sat_vb, "lockUnspents": lock_unspents,
                   "add_inputs": add_inputs, "replaceable": True}
        result = self.call("walletcreatefundedpsbt", outpoint_objects(inputs or []), outs, 0,
                           options)
        return FundedPsbt(str(result["psbt"]), btc_to_sats(result["fee"]),
                          int(result["changepos"]))

    def psbt_bump_fee(self, txid: str, *, fee_rate_sat_vb: int) -> BumpPsbt:
        """The wallet's fee bump of `txid` as an unsigned PSBT. Never `bumpfee`: that signs and
        broadcasts at once, before the new version could be stored (docs/architecture.md §5.1)."""
        result = self.call("psbtbumpfee", txid, {"fee_rate": fee_rate_sat_vb})
        return BumpPsbt(str(result["psbt"]), btc_to_sats(result["origfee"]),
                        btc_to_sats(result["fee"]))

    def sign_psbt_with_wallet(self, psbt: str) -> str:
        """walletprocesspsbt (sign, finalize): the complete transaction's hex."""
        result = self.call("walletprocesspsbt", psbt, True)
        if not result.get("complete") or "hex" not in result:
            raise WalletError("signing incomplete: the wallet could not sign every input")
        return str(result["hex"])

    def finalize_psbt(self, psbt: str) -> tuple[str | None, bool]:
        result = self.call("finalizepsbt", psbt)
        complete = bool(result.get("complete"))
        return (str(result["hex"]) if complete and "hex" in result else None), complete

    def decode_psbt(self, psbt: str) -> dict[str, Any]:
        return dict(self.call("decodepsbt", psbt))


__all__ = [
    "BumpPsbt", "DecodedTx", "FundedPsbt", "FundedTx", "NodeClient", "NodeError",
    "READ_ONLY_METHODS", "TxOutput", "outpoint_objects", "parse_outpoint", "redact",
]
