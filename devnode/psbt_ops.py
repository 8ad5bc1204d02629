"""PSBT (BIP174, version 0) creation, signing, finalizing and decoding, on embit's PSBT."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from embit import bip32, ec
from embit.psbt import PSBT, DerivationPath
from embit.script import Script, Witness
from embit.transaction import SIGHASH, Transaction, TransactionOutput

from devnode.errors import RPC_DESERIALIZATION_ERROR, RPCError
from devnode.scriptcode import push_data, script_pubkey_json
from devnode.scripts import ScriptFailure, p2wpkh_script, sign_input, signing_kind, verify_input
from devnode.spend import find_coin
from devnode.txutil import btc, copy_tx, tx_to_json
from devnode.wallet import KeyInfo, Wallet

if TYPE_CHECKING:
    from devnode.node import Node


def parse_psbt(text: Any) -> PSBT:
    if not isinstance(text, str):
        raise RPCError(RPC_DESERIALIZATION_ERROR, "TX decode failed invalid base64")
    try:
        return PSBT.from_base64(text)
    except Exception as exc:  # embit raises several types for malformed input
        raise RPCError(RPC_DESERIALIZATION_ERROR, f"TX decode failed {exc}") from None


def _derivation(wallet: Wallet, key: KeyInfo) -> DerivationPath:
    return DerivationPath(bytes.fromhex(wallet.fingerprint), bip32.parse_path(key.path))


def _prev_tx(node: Node, wallet: Wallet, txid: str) -> Transaction | None:
    if txid in wallet.txs:
        return wallet.txs[txid].tx
    found = node.find_tx(txid)
    return found[0] if found else None


def fill(node: Node, wallet: Wallet, psbt: PSBT, *, bip32derivs: bool = True) -> None:
    """Add what a signer needs for the wallet's inputs and change (Core's FillPSBT, no sign)."""
    for index, inp in enumerate(psbt.inputs):
        if inp.final_scriptwitness or inp.final_scriptsig:
            continue
        outpoint = (bytes(inp.txid).hex(), inp.vout)
        found = find_coin(node, wallet, outpoint)
        if found is None:
            continue
        value, script = found
        key = wallet.key_for(script)
        kind = signing_kind(script)
        if kind in ("p2wpkh", "p2sh") and inp.witness_utxo is None:
            inp.witness_utxo = TransactionOutput(value, Script(script))
        if inp.non_witness_utxo is None:
            prev = _prev_tx(node, wallet, outpoint[0])
            if prev is not None:
                inp.non_witness_utxo = copy_tx(prev)
        if key is None:
            continue
        if kind == "p2sh" and inp.redeem_script is None:
            inp.redeem_script = Script(p2wpkh_script(key.pub))
        if bip32derivs:
            inp.bip32_derivations[ec.PublicKey.parse(key.pub)] = _derivation(wallet, key)
        del index
    if bip32derivs:
        for out_scope, out in zip(psbt.outputs, psbt.tx.vout, strict=True):
            key = wallet.key_for(bytes(out.script_pubkey.data))
            if key is not None:
                out_scope.bip32_derivations[ec.PublicKey.parse(key.pub)] = _derivation(wallet, key)


def _spent(inp: Any) -> tuple[int, bytes] | None:
    utxo = inp.witness_utxo
    if utxo is None and inp.non_witness_utxo is not None:
        utxo = inp.non_witness_utxo.vout[inp.vout]
    return (utxo.value, bytes(utxo.script_pubkey.data)) if utxo is not None else None


def sign(wallet: Wallet, psbt: PSBT, hashtype: int = SIGHASH.ALL) -> None:
    unsigned = psbt.tx
    for index, inp in enumerate(psbt.inputs):
        spent = _spent(inp)
        if spent is None or inp.final_scriptwitness or inp.final_scriptsig:
            continue
        key = wallet.key_for(spent[1])
        if key is None or signing_kind(spent[1]) is None:
            continue
        _, _, sig = sign_input(copy_tx(unsigned), index, key.key, spent[1], spent[0], hashtype)
        inp.partial_sigs[ec.PublicKey.parse(key.pub)] = sig


def finalize(psbt: PSBT) -> bool:
    """BIP174 finalizer for single-key inputs; True when every input is final."""
    complete = True
    for inp in psbt.inputs:
        if inp.final_scriptwitness or inp.final_scriptsig:
            continue
        spent = _spent(inp)
        if spent is None or len(inp.partial_sigs) != 1:
            complete = False
            continue
        pub, sig = next(iter(inp.partial_sigs.items()))
        sec = bytes(pub.sec())
        kind = signing_kind(spent[1])
        if kind == "p2pkh":
            inp.final_scriptsig = Script(push_data(sig) + push_data(sec))
        elif kind == "p2wpkh":
            inp.final_scriptwitness = Witness([sig, sec])
        elif kind == "p2sh" and inp.redeem_script is not None:
            inp.final_scriptsig = Script(push_data(bytes(inp.redeem_script.data)))
            inp.final_scriptwitness = Witness([sig, sec])
        else:
            complete = False
            continue
        inp.partial_sigs.clear()
        inp.bip32_derivations.clear()
        inp.redeem_script = None
        inp.sighash_type = None
    return complete


def extract(psbt: PSBT) -> Transaction | None:
    """The network transaction, if every input is final and its signature verifies."""
    tx = copy_tx(psbt.tx)
    for index, inp in enumerate(psbt.inputs):
        if not (inp.final_scriptwitness or inp.final_scriptsig):
            return None
        if inp.final_scriptsig:
            tx.vin[index].script_sig = inp.final_scriptsig
        if inp.final_scriptwitness:
            tx.vin[index].witness = inp.final_scriptwitness
    for index, inp in enumerate(psbt.inputs):
        spent = _spent(inp)
        if spent is None:
            return None
        try:
            verify_input(tx, index, spent[1], spent[0])
        except ScriptFailure:
            return None
    return tx


def decode(psbt: PSBT) -> dict[str, Any]:
    """decodepsbt's shape (the common fields)."""
    inputs: list[dict[str, Any]] = []
    total_in: int | None = 0
    for inp in psbt.inputs:
        item: dict[str, Any] = {}
        if inp.non_witness_utxo is not None:
            item["non_witness_utxo"] = tx_to_json(inp.non_witness_utxo)
        if inp.witness_utxo is not None:
            item["witness_utxo"] = {
                "amount": btc(inp.witness_utxo.value),
                "scriptPubKey": script_pubkey_json(bytes(inp.witness_utxo.script_pubkey.data)),
            }
        if inp.partial_sigs:
            item["partial_signatures"] = {bytes(p.sec()).hex(): s.hex()
                                          for p, s in inp.partial_sigs.items()}
        if inp.sighash_type is not None:
            item["sighash"] = {1: "ALL", 2: "NONE", 3: "SINGLE"}.get(inp.sighash_type,
                                                                    str(inp.sighash_type))
        if inp.redeem_script is not None:
            item["redeem_script"] = {"hex": bytes(inp.redeem_script.data).hex()}
        if inp.bip32_derivations:
            item["bip32_derivs"] = [_deriv_json(p, d) for p, d in inp.bip32_derivations.items()]
        if inp.final_scriptsig:
            item["final_scriptSig"] = {"hex": bytes(inp.final_scriptsig.data).hex()}
        if inp.final_scriptwitness:
            item["final_scriptwitness"] = [bytes(w).hex() for w in inp.final_scriptwitness.items]
        spent = _spent(inp)
        total_in = None if spent is None or total_in is None else total_in + spent[0]
        inputs.append(item)
    outputs: list[dict[str, Any]] = []
    for out in psbt.outputs:
        item = {}
        if out.bip32_derivations:
            item["bip32_derivs"] = [_deriv_json(p, d) for p, d in out.bip32_derivations.items()]
        outputs.append(item)
    result: dict[str, Any] = {
        "tx": tx_to_json(psbt.tx), "global_xpubs": [], "psbt_version": 0, "proprietary": [],
        "unknown": {}, "inputs": inputs, "outputs": outputs,
    }
    if total_in is not None:
        result["fee"] = btc(total_in - sum(o.value for o in psbt.tx.vout))
    return result


def _deriv_json(pub: Any, deriv: DerivationPath) -> dict[str, str]:
    return {"pubkey": bytes(pub.sec()).hex(),
            "master_fingerprint": bytes(deriv.fingerprint).hex(),
            "path": bip32.path_to_str(deriv.derivation).replace("'", "h")}
