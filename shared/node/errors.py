"""Typed node errors: the cases a payout worker must tell apart (docs/architecture.md §6 step 5,
§8).

Every error carries bitcoind's JSON-RPC `code` (None when there was no JSON-RPC reply) and
`message`. Messages never contain the node URL's password.
"""

from __future__ import annotations


class NodeError(Exception):
    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message if code is None else f"{message} (code {code})")
        self.code = code
        self.message = message


class NodeUnavailable(NodeError):
    """No usable reply: refused, reset, timed out, reply dropped, HTTP error without JSON.
    The call may or may not have taken effect on the node: the outcome is unknown."""


class AuthFailed(NodeError):
    """HTTP 401: wrong rpcuser/rpcpassword."""


class MethodNotFound(NodeError):
    """-32601: the node does not have this RPC (e.g. a devnode_* call on real bitcoind)."""


class InvalidParameter(NodeError):
    """-8 / -3 / -22 / -32602: a bad argument (value, type, or undecodable transaction)."""


class InvalidAddress(NodeError):
    """-5 about an address: the node cannot pay to it."""


class NotFound(NodeError):
    """-5 about a transaction or block: the node does not know it."""


class WalletError(NodeError):
    """-4 and the other wallet codes (-13, -14, -18, -19, -35 ...), or an incomplete signature."""


class InsufficientFunds(WalletError):
    """-6, or -4 "Insufficient funds" (fundrawtransaction reports it as a wallet error)."""


class ChainLimitReached(WalletError):
    """-4 "Unconfirmed UTXOs are available, but spending them creates a chain of transactions
    that will be rejected by the mempool": every coin the wallet could use sits at the end of
    a chain of 25 unconfirmed transactions; or -4 "possibly too many descendants for tx …
    [limit: 25]" (or a size limit) when the funded transaction would break the mempool's
    package limits. A wait for the next block, not a failure."""


class TxRejected(NodeError):
    """sendrawtransaction / mempool refused the transaction for another reason (-26, -25)."""


class InputsMissingOrSpent(TxRejected):
    """-25 "bad-txns-inputs-missingorspent" / "Missing inputs": an input does not exist or
    is already spent (possibly by this very transaction, confirmed)."""


class TxConflict(TxRejected):
    """-26 "txn-mempool-conflict" or a refused replacement ("insufficient fee, rejecting
    replacement ..."): another mempool transaction spends one of the inputs."""


class AlreadyKnown(TxRejected):
    """-27 "Transaction outputs already in utxo set" / "transaction already in block chain",
    or -26 "txn-already-in-mempool" / "txn-already-known": this transaction is already there."""


class FeeTooHigh(TxRejected):
    """-25/-26 "max-fee-exceeded" / "Fee exceeds maximum configured by user"."""


_ALREADY = ("txn-already-in-mempool", "txn-already-known", "txn-same-nonwitness-data-in-mempool",
            "already in block chain", "already in utxo set")
_CONFLICT = ("txn-mempool-conflict", "insufficient fee", "rejecting replacement",
             "bad-txns-spends-conflicting-tx", "replacement-adds-unconfirmed",
             "too many potential replacements")
_MISSING = ("missingorspent", "missing inputs", "missing-inputs")
_FEE = ("max-fee-exceeded", "fee exceeds maximum")
_WALLET_CODES = {-4, -11, -12, -13, -14, -15, -16, -17, -18, -19, -35, -36}


def classify(code: int | None, message: str) -> NodeError:
    """The typed error for a JSON-RPC error object."""
    text = message.lower()
    if code == -32601:
        return MethodNotFound(message, code)
    if code == -28:  # RPC_IN_WARMUP: the node is starting; nothing happened
        return NodeUnavailable(message, code)
    if code in (-4, -6) and (
        "unconfirmed utxos are available" in text
        # checkChainLimits on the finished transaction: "possibly too many descendants for
        # tx … [limit: 25]", "possibly exceeds descendant size limit …" and the like.
        or ("possibly" in text and "[limit:" in text)
    ):
        return ChainLimitReached(message, code)
    if code == -6 or (code == -4 and "insufficient funds" in text):
        return InsufficientFunds(message, code)
    if code in (-25, -26, -27):
        if any(s in text for s in _FEE):
            return FeeTooHigh(message, code)
        if code == -27 or any(s in text for s in _ALREADY):
            return AlreadyKnown(message, code)
        if any(s in text for s in _MISSING):
            return InputsMissingOrSpent(message, code)
        if any(s in text for s in _CONFLICT):
            return TxConflict(message, code)
        return TxRejected(message, code)
    if code == -5:
        if "address" in text or "bech32" in text or "base58" in text:
            return InvalidAddress(message, code)
        return NotFound(message, code)
    if code in (-8, -3, -22, -32602):
        return InvalidParameter(message, code)
    if code in _WALLET_CODES:
        return WalletError(message, code)
    return NodeError(message, code)
