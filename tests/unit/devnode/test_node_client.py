"""NodeClient's offline behaviour: error typing, redaction, amount conversion, and the
Authorization header it sends (against an in-process server)."""

from __future__ import annotations

import base64
import http.server
import json
import threading
import urllib.parse
from collections.abc import Iterator
from decimal import Decimal

import pytest

from shared.node import NodeClient
from shared.node.amounts import btc_kvb_to_sat_vb_ceil, btc_to_sats, sat_vb_to_btc_kvb, sats_to_btc
from shared.node.client import READ_ONLY_METHODS, parse_outpoint, redact
from shared.node.errors import (
    AlreadyKnown,
    AuthFailed,
    ChainLimitReached,
    FeeTooHigh,
    InputsMissingOrSpent,
    InsufficientFunds,
    InvalidAddress,
    InvalidParameter,
    MethodNotFound,
    NodeError,
    NodeUnavailable,
    NotFound,
    TxConflict,
    TxRejected,
    WalletError,
    classify,
)


@pytest.mark.parametrize(
    ("code", "message", "expected"),
    [
        (-6, "Insufficient funds", InsufficientFunds),
        (-4, "Insufficient funds", InsufficientFunds),
        (-4, "Fee estimation failed", WalletError),
        # Captured from Bitcoin Core 29.2 (and its checkChainLimits wording): waits, not errors.
        (-4, "Unconfirmed UTXOs are available, but spending them creates a chain of "
             "transactions that will be rejected by the mempool", ChainLimitReached),
        (-4, "possibly too many descendants for tx ab12 [limit: 25]", ChainLimitReached),
        (-4, "possibly exceeds descendant size limit for tx ab12 [limit: 101000]",
         ChainLimitReached),
        (-4, "Maximum transaction weight is less than transaction weight without inputs",
         WalletError),
        (-25, "bad-txns-inputs-missingorspent", InputsMissingOrSpent),
        (-25, "Missing inputs", InputsMissingOrSpent),
        (-25, "Fee exceeds maximum configured by user (e.g. -maxtxfee, maxfeerate)", FeeTooHigh),
        (-26, "max-fee-exceeded", FeeTooHigh),
        (-26, "txn-mempool-conflict", TxConflict),
        (-26, "insufficient fee, rejecting replacement abc; new feerate", TxConflict),
        (-26, "txn-already-in-mempool", AlreadyKnown),
        (-26, "txn-already-known", AlreadyKnown),
        (-27, "Transaction outputs already in utxo set", AlreadyKnown),
        (-27, "transaction already in block chain", AlreadyKnown),
        (-26, "mandatory-script-verify-flag-failed (Signature must be zero)", TxRejected),
        (-26, "dust", TxRejected),
        (-5, "Invalid Bitcoin address: xyz", InvalidAddress),
        (-5, "Invalid or non-wallet transaction id", NotFound),
        (-5, "No such mempool or blockchain transaction", NotFound),
        (-8, "Invalid parameter, output already locked", InvalidParameter),
        (-3, "JSON value of type string is not of expected type number", InvalidParameter),
        (-18, "Requested wallet does not exist or is not loaded", WalletError),
        (-32601, "Method not found", MethodNotFound),
        (-28, "Loading block index...", NodeUnavailable),
        (-1, "something else", NodeError),
    ],
)
def test_classify(code: int, message: str, expected: type[NodeError]) -> None:
    error = classify(code, message)
    assert type(error) is expected
    assert error.code == code and error.message == message


def test_subclassing_lets_callers_catch_broadly() -> None:
    assert issubclass(InsufficientFunds, WalletError)
    for cls in (InputsMissingOrSpent, TxConflict, AlreadyKnown, FeeTooHigh):
        assert issubclass(cls, TxRejected)


def test_redaction() -> None:
    url = "http://payouts:secret@127.0.0.1:18443/wallet/hot"
    assert redact(url) == "http://payouts:***@127.0.0.1:18443/wallet/hot"
    client = NodeClient(url)
    assert "secret" not in repr(client) and "secret" not in client.safe_url
    with pytest.raises(ValueError) as caught:
        NodeClient("ftp://u:secret@host/")
    assert "secret" not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://u:p%40w@[::1]:18443/wallet/hot?x=1", "http://u:***@[::1]:18443/wallet/hot?x=1"),
        ("http://u:pa@ss@Node.Example:8332", "http://u:***@Node.Example:8332"),
        ("https://:p@host/", "https://:***@host/"),
        ("http://u@host/wallet/a@b", "http://u@host/wallet/a@b"),
        ("http://host:8332/", "http://host:8332/"),
        ("not a url", "not a url"),
    ],
)
def test_redaction_changes_only_the_password(url: str, expected: str) -> None:
    assert redact(url) == expected


def test_only_reads_are_retried() -> None:
    assert "getblockcount" in READ_ONLY_METHODS
    for method in ("sendrawtransaction", "fundrawtransaction", "lockunspent", "sendtoaddress",
                   "generatetoaddress", "bumpfee", "getnewaddress"):
        assert method not in READ_ONLY_METHODS


def test_amount_conversions() -> None:
    assert sats_to_btc(1) == Decimal("0.00000001")
    assert btc_to_sats(Decimal("20999999.99999999")) == 2_099_999_999_999_999
    assert btc_to_sats("0.1") == 10_000_000
    with pytest.raises(TypeError):
        btc_to_sats(0.1)
    with pytest.raises(ValueError):
        btc_to_sats(Decimal("0.000000001"))
    with pytest.raises(TypeError):
        sats_to_btc(1.5)  # type: ignore[arg-type]
    assert sat_vb_to_btc_kvb(10) == Decimal("0.00010000")
    assert btc_kvb_to_sat_vb_ceil(Decimal("0.00001001")) == 2
    assert btc_kvb_to_sat_vb_ceil(Decimal("0.00001")) == 1


def test_outpoints() -> None:
    assert parse_outpoint("ab" * 32 + ":3") == ("ab" * 32, 3)
    for bad in ("abc:1", "ab" * 32, "ab" * 32 + ":x"):
        with pytest.raises(ValueError):
            parse_outpoint(bad)


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Answers every JSON-RPC POST with result 0 and records its Authorization headers."""

    seen: list[list[str]] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        _Recorder.seen.append(self.headers.get_all("Authorization") or [])
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = json.dumps({"result": 0, "error": None, "id": 1}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[int]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Recorder.seen = []
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("password", ["p/a+s@s%w", "a%2Fb", "+/@%:=", "plain"])
def test_the_authorization_header_carries_the_percent_decoded_credentials(
    recorder: int, password: str
) -> None:
    quoted = urllib.parse.quote(password, safe="")
    client = NodeClient(f"http://ops%20user:{quoted}@127.0.0.1:{recorder}/wallet/hot")

    assert client.call("getblockcount") == 0

    expected = "Basic " + base64.b64encode(f"ops user:{password}".encode()).decode()
    assert _Recorder.seen == [[expected]]  # exactly one header, the decoded one


def test_a_password_with_slash_plus_at_and_percent_is_accepted_by_the_node() -> None:
    from devnode.server import start_devnode

    with start_devnode(port=0, rpcuser="ops user", rpcpassword="p/a+s@s%w") as dn:
        assert "p%2Fa%2Bs%40s%25w" in dn.wallet_url
        assert NodeClient(dn.wallet_url).call("getblockcount") == 0
        wrong = dn.wallet_url.replace("%25w", "%25x")
        with pytest.raises(AuthFailed) as caught:
            NodeClient(wrong).call("getblockcount")
        assert "p%2Fa" not in str(caught.value) and "p/a" not in str(caught.value)
