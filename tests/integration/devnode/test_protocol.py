"""bitcoind's JSON-RPC over HTTP: auth, endpoints, request/response shapes, batches, codes."""

from __future__ import annotations

import base64
import http.client
import json
from typing import Any

import pytest

from cli.regtest_node import RegtestNode
from devnode.server import RunningDevnode
from shared.node.errors import (
    AuthFailed,
    InvalidAddress,
    InvalidParameter,
    MethodNotFound,
    NotFound,
    WalletError,
)


def post(devnode: RunningDevnode, body: Any, *, path: str = "/", password: str | None = None,
         raw: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(devnode.host, devnode.port, timeout=10)
    auth = base64.b64encode(f"{devnode.rpcuser}:{password or devnode.rpcpassword}".encode())
    headers = {"Content-Type": "application/json", "Authorization": f"Basic {auth.decode()}"}
    conn.request("POST", path, raw if raw is not None else json.dumps(body), headers)
    reply = conn.getresponse()
    data = reply.read()
    conn.close()
    return reply.status, dict(reply.getheaders()), data


def test_genesis_and_chain_are_regtest(node: RegtestNode) -> None:
    info = node.get_blockchain_info()
    assert info["chain"] == "regtest"
    assert info["blocks"] == 0
    # The real regtest genesis block, rebuilt from its coinbase and header.
    assert info["bestblockhash"] == (
        "0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206"
    )


def test_wrong_password_is_401_and_a_typed_error(devnode: RunningDevnode) -> None:
    status, headers, _ = post(devnode, {"method": "getblockcount", "id": 1}, password="nope")
    assert status == 401
    assert headers["WWW-Authenticate"] == 'Basic realm="jsonrpc"'
    bad = devnode.wallet_url.replace(":payouts@", ":wrong-secret@")
    with pytest.raises(AuthFailed) as caught:
        RegtestNode(bad).get_block_count()
    assert "wrong-secret" not in str(caught.value)


def test_percent_encoded_credentials() -> None:
    from devnode.server import start_devnode

    with start_devnode(port=0, rpcuser="ops user", rpcpassword="p@ss/w:rd+=") as dn:
        assert "p%40ss%2Fw%3Ard%2B%3D" in dn.wallet_url
        assert RegtestNode(dn.wallet_url).get_block_count() == 0


def test_missing_auth_header_is_401(devnode: RunningDevnode) -> None:
    conn = http.client.HTTPConnection(devnode.host, devnode.port, timeout=10)
    conn.request("POST", "/", json.dumps({"method": "getblockcount", "id": 1}))
    assert conn.getresponse().status == 401
    conn.close()


def test_json_rpc_1_shapes_and_status_codes(devnode: RunningDevnode) -> None:
    status, headers, data = post(devnode, {"method": "getblockcount", "params": [], "id": 7})
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert json.loads(data) == {"result": 0, "error": None, "id": 7}

    status, _, data = post(devnode, {"method": "nosuchmethod", "params": [], "id": "x"})
    assert status == 404
    assert json.loads(data) == {"result": None, "error": {"code": -32601,
                                                          "message": "Method not found"},
                                "id": "x"}

    status, _, data = post(devnode, {"method": "getblockhash", "params": [5], "id": 1})
    assert status == 500
    assert json.loads(data)["error"] == {"code": -8, "message": "Block height out of range"}

    status, _, data = post(devnode, {"method": "getblockhash", "params": ["zero"], "id": 1})
    assert json.loads(data)["error"] == {
        "code": -3, "message": "JSON value of type string is not of expected type number"}


def test_json_rpc_2_replies_200_and_batches(devnode: RunningDevnode) -> None:
    status, _, data = post(devnode, {"jsonrpc": "2.0", "method": "nosuch", "id": 3})
    assert status == 200
    assert json.loads(data) == {"jsonrpc": "2.0", "error": {"code": -32601,
                                                            "message": "Method not found"},
                                "id": 3}
    batch = [{"method": "getblockcount", "id": 1}, {"method": "nosuch", "id": 2},
             {"method": "getbestblockhash", "id": 3}]
    status, _, data = post(devnode, batch)
    assert status == 200
    replies = json.loads(data)
    assert [r["id"] for r in replies] == [1, 2, 3]
    assert replies[0]["result"] == 0 and replies[1]["error"]["code"] == -32601
    assert len(replies[2]["result"]) == 64


def test_parse_error_and_get(devnode: RunningDevnode) -> None:
    status, _, data = post(devnode, None, raw=b"{not json")
    assert status == 500 and json.loads(data)["error"]["code"] == -32700
    conn = http.client.HTTPConnection(devnode.host, devnode.port, timeout=10)
    conn.request("GET", "/")
    assert conn.getresponse().status == 405


def test_named_params(devnode: RunningDevnode) -> None:
    status, _, data = post(devnode, {"method": "getblockhash", "params": {"height": 0}, "id": 1})
    assert status == 200 and json.loads(data)["result"].startswith("0f9188f1")


def test_amounts_are_exact_8_decimal_numbers(devnode: RunningDevnode, funded: RegtestNode) -> (
    None
):
    _, _, data = post(devnode, {"method": "getbalance", "id": 1}, path="/wallet/hot")
    assert b'"result":50.00000000' in data


def test_wallet_endpoints(devnode: RunningDevnode, node: RegtestNode) -> None:
    # One wallet loaded: "/" reaches it as well.
    root = RegtestNode(devnode.url)
    assert root.get_wallet_info()["walletname"] == "hot"
    with pytest.raises(WalletError) as missing:
        RegtestNode(devnode.url + "/wallet/nope").get_wallet_info()
    assert missing.value.code == -18
    node.call("createwallet", "cold")
    assert sorted(node.call("listwallets")) == ["cold", "hot"]
    with pytest.raises(WalletError) as ambiguous:
        root.get_wallet_info()
    assert ambiguous.value.code == -19
    cold = RegtestNode(devnode.url + "/wallet/cold")
    assert cold.get_wallet_info()["walletname"] == "cold"
    assert cold.get_new_address() != node.get_new_address()
    with pytest.raises(WalletError) as loaded:
        node.call("loadwallet", "cold")
    assert loaded.value.code == -35


def test_typed_errors_for_bad_input(funded: RegtestNode) -> None:
    with pytest.raises(MethodNotFound):
        funded.call("getnothing")
    with pytest.raises(InvalidAddress):
        funded.create_raw_transaction({"bc1qnotregtest": 1000})
    with pytest.raises(InvalidAddress):
        funded.send_to_address("mainnet-or-garbage", 10_000)
    with pytest.raises(InvalidParameter) as caught:
        funded.decode_raw_transaction("00ff")
    assert caught.value.code == -22
    with pytest.raises(InvalidParameter):
        funded.call("getrawtransaction", "abc", True)
    unknown = "11" * 32
    assert funded.get_transaction(unknown) is None
    assert funded.get_raw_transaction(unknown) is None
    assert funded.get_mempool_entry(unknown) is None
    assert funded.get_tx_out(f"{unknown}:0") is None
    with pytest.raises(NotFound):
        funded.call("getblock", unknown)


def test_addresses_by_type(funded: RegtestNode) -> None:
    assert funded.get_new_address().startswith("bcrt1q")
    legacy = funded.get_new_address("legacy")
    wrapped = funded.get_new_address("p2sh-segwit")
    assert legacy[0] in "mn" and wrapped[0] == "2"
    info = funded.call("getaddressinfo", wrapped)
    assert info["ismine"] and info["isscript"] and info["desc"].startswith("sh(wpkh([")
    assert funded.call("validateaddress", legacy)["isvalid"]
    assert not funded.call("validateaddress", "bcrt1qinvalid")["isvalid"]
    assert not funded.call("getaddressinfo", "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080")[
        "ismine"]
