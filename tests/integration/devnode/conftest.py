"""A fresh simulated regtest node per test, driven only through HTTP and the real client
(`RegtestNode`: the production `NodeClient` plus the test helpers).

Produced transactions are cross-checked with python-bitcoinlib, a library independent of
the devnode's embit: its own deserializer, txid/wtxid hashing and BIP143/legacy sighash.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import bitcoin
import pytest
from bitcoin.core import CTransaction, b2lx
from bitcoin.core.script import (
    OP_CHECKSIG,
    OP_DUP,
    OP_EQUALVERIFY,
    OP_HASH160,
    SIGHASH_ALL,
    SIGVERSION_BASE,
    SIGVERSION_WITNESS_V0,
    CScript,
    SignatureHash,
)
from bitcoin.core.serialize import Hash160
from bitcoin.wallet import CBitcoinAddress
from embit import ec

from cli.regtest_node import RegtestNode
from devnode.server import RunningDevnode, start_devnode

bitcoin.SelectParams("regtest")


@pytest.fixture
def devnode() -> Iterator[RunningDevnode]:
    with start_devnode(host="127.0.0.1", port=0) as running:
        yield running


@pytest.fixture
def node(devnode: RunningDevnode) -> RegtestNode:
    return RegtestNode(devnode.wallet_url, timeout=10)


@pytest.fixture
def funded(node: RegtestNode) -> RegtestNode:
    """101 blocks: one mature 50 BTC coinbase, 100 immature ones."""
    node.generate_to_address(101, node.get_new_address())
    return node


def independent_decode(raw_hex: str) -> dict[str, Any]:
    tx = CTransaction.deserialize(bytes.fromhex(raw_hex))
    outputs = []
    for n, out in enumerate(tx.vout):
        try:
            address: str | None = str(CBitcoinAddress.from_scriptPubKey(out.scriptPubKey))
        except Exception:  # OP_RETURN and other address-less scripts
            address = None
        outputs.append((address, out.nValue, n))
    return {
        "txid": b2lx(tx.GetTxid()),
        "wtxid": b2lx(tx.GetHash()),
        "inputs": [f"{b2lx(i.prevout.hash)}:{i.prevout.n}" for i in tx.vin],
        "outputs": outputs,
        "vsize": math.ceil(tx.calc_weight() / 4),
        "tx": tx,
    }


def verify_signatures_independently(raw_hex: str, spent: list[tuple[int, str]]) -> None:
    """Recompute each input's sighash with python-bitcoinlib and check the signature.

    `spent` is (value_sats, scriptPubKey hex) per input; P2WPKH and P2PKH inputs only."""
    tx = CTransaction.deserialize(bytes.fromhex(raw_hex))
    for index, (value, script_hex) in enumerate(spent):
        script = bytes.fromhex(script_hex)
        if script[:2] == b"\x00\x14":
            sig, pub = tx.wit.vtxinwit[index].scriptWitness.stack
            code = CScript([OP_DUP, OP_HASH160, Hash160(pub), OP_EQUALVERIFY, OP_CHECKSIG])
            digest = SignatureHash(code, tx, index, SIGHASH_ALL, amount=value,
                                   sigversion=SIGVERSION_WITNESS_V0)
        else:
            sig, pub = list(tx.vin[index].scriptSig)
            digest = SignatureHash(CScript(script), tx, index, SIGHASH_ALL,
                                   sigversion=SIGVERSION_BASE)
        assert sig[-1] == SIGHASH_ALL
        assert Hash160(pub) in script
        assert ec.PublicKey.parse(pub).verify(ec.Signature.parse(sig[:-1]), digest)


def pay(node: RegtestNode, outputs: dict[str, int], fee_rate: int = 2) -> tuple[str, str, int]:
    """The worker's build path: create, fund (locking), sign. Returns (hex, txid, fee)."""
    funded = node.fund_raw_transaction(node.create_raw_transaction(outputs),
                                       fee_rate_sat_vb=fee_rate)
    signed = node.sign_raw_transaction_with_wallet(funded.hex)
    return signed, node.decode_raw_transaction(signed).txid, funded.fee_sats


FOREIGN = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"  # BIP173's regtest example key hash
