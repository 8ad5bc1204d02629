"""Signing and signature checks for the script types the simulated wallet uses.

P2WPKH, P2SH-P2WPKH and P2PKH spends are checked the way bitcoind's interpreter ends up
checking them (key hash, then an ECDSA signature over the BIP143 or legacy sighash, through
libsecp256k1 via embit). Any other spent script type is refused: the devnode never pays to
one it cannot verify, and a foreign spend of one is rejected rather than waved through.
"""

from __future__ import annotations

from embit import ec
from embit.script import Script
from embit.transaction import SIGHASH, Transaction

from devnode.scriptcode import DecodeError, is_push_only, push_data, script_ops
from devnode.txutil import hash160

MANDATORY = "mandatory-script-verify-flag-failed"
NON_MANDATORY = "non-mandatory-script-verify-flag"

ERR_EVAL_FALSE = "Script evaluated without error but finished with a false/empty top stack element"
ERR_EQUALVERIFY = "Script failed an OP_EQUALVERIFY operation"
ERR_STACK_SIZE = "Operation not valid with the current stack size"
ERR_EMPTY_WITNESS = "Witness program was passed an empty witness"
ERR_WITNESS_MISMATCH = "Witness program hash mismatch"
ERR_WITNESS_MALLEATED = "Witness requires empty scriptSig"
ERR_WITNESS_MALLEATED_P2SH = "Witness requires only-redeemscript scriptSig"
ERR_WITNESS_UNEXPECTED = "Witness provided for non-witness script"
ERR_SIG_PUSHONLY = "Only push operators allowed in signatures"
ERR_HASHTYPE = "Signature hash type missing or not understood"
ERR_SIG_DER = "Non-canonical DER signature"
ERR_PUBKEYTYPE = "Public key is neither compressed or uncompressed"
ERR_WITNESS_PUBKEYTYPE = "Using non-compressed keys in segwit"

_VALID_HASHTYPES = {1, 2, 3, 0x81, 0x82, 0x83}

# A low-R DER signature is at most 70 bytes, plus the sighash byte: what fee estimation
# assumes, like bitcoind's DUMMY_SIGNATURE_CREATOR for keys the wallet grinds low-R for.
DUMMY_SIG = b"\x30" + b"\x00" * 69 + b"\x01"
DUMMY_PUB = b"\x02" + b"\x00" * 32


class ScriptFailure(Exception):
    """Verification failed; str() is bitcoind's reject reason."""

    def __init__(self, message: str, *, mandatory: bool = True) -> None:
        prefix = MANDATORY if mandatory else NON_MANDATORY
        super().__init__(f"{prefix} ({message})")


def p2pkh_script(pub: bytes) -> bytes:
    return b"\x76\xa9\x14" + hash160(pub) + b"\x88\xac"


def p2wpkh_script(pub: bytes) -> bytes:
    return b"\x00\x14" + hash160(pub)


def p2sh_script(redeem: bytes) -> bytes:
    return b"\xa9\x14" + hash160(redeem) + b"\x87"


def sighash(tx: Transaction, index: int, script_code: bytes, value: int, hashtype: int, *,
            segwit: bool) -> bytes:
    tx.clear_cache()  # embit caches BIP143 midstates on the object
    if segwit:
        return bytes(tx.sighash_segwit(index, Script(script_code), value, sighash=hashtype))
    return bytes(tx.sighash_legacy(index, Script(script_code), sighash=hashtype))


def make_signature(key: ec.PrivateKey, digest: bytes, hashtype: int = SIGHASH.ALL) -> bytes:
    return bytes(key.sign(digest).serialize()) + bytes([hashtype])


def signing_kind(spent_script: bytes) -> str | None:
    kind = Script(spent_script).script_type()
    return kind if kind in ("p2wpkh", "p2pkh", "p2sh") else None


def sign_input(tx: Transaction, index: int, key: ec.PrivateKey, spent_script: bytes, value: int,
               hashtype: int = SIGHASH.ALL) -> tuple[bytes, list[bytes], bytes]:
    """(scriptSig, witness items, signature) that spend `spent_script` with `key`.

    P2SH is taken to be P2SH-P2WPKH, the only P2SH script the wallet creates.
    """
    pub = bytes(key.get_public_key().sec())
    kind = signing_kind(spent_script)
    if kind == "p2pkh":
        sig = make_signature(key, sighash(tx, index, spent_script, value, hashtype,
                                          segwit=False), hashtype)
        return push_data(sig) + push_data(pub), [], sig
    code = p2pkh_script(pub)  # BIP143 script code for a key-hash witness program
    sig = make_signature(key, sighash(tx, index, code, value, hashtype, segwit=True), hashtype)
    script_sig = push_data(p2wpkh_script(pub)) if kind == "p2sh" else b""
    return script_sig, [sig, pub], sig


def _check_sig(tx: Transaction, index: int, sig: bytes, pub: bytes, code: bytes, value: int, *,
               segwit: bool) -> None:
    if not sig:
        raise ScriptFailure(ERR_EVAL_FALSE)
    hashtype = sig[-1]
    if hashtype not in _VALID_HASHTYPES:
        raise ScriptFailure(ERR_HASHTYPE, mandatory=False)
    try:
        signature = ec.Signature.parse(sig[:-1])
        pubkey = ec.PublicKey.parse(pub)
    except Exception:
        raise ScriptFailure(ERR_SIG_DER, mandatory=False) from None
    digest = sighash(tx, index, code, value, hashtype, segwit=segwit)
    if not pubkey.verify(signature, digest):
        raise ScriptFailure(ERR_EVAL_FALSE)


def _check_p2wpkh(tx: Transaction, index: int, program: bytes, value: int) -> None:
    items = [bytes(item) for item in tx.vin[index].witness.items]
    if not items:
        raise ScriptFailure(ERR_EMPTY_WITNESS)
    if len(items) != 2:
        raise ScriptFailure(ERR_WITNESS_MISMATCH)
    sig, pub = items
    if hash160(pub) != program:
        raise ScriptFailure(ERR_EQUALVERIFY)
    if len(pub) != 33 or pub[0] not in (2, 3):
        raise ScriptFailure(ERR_WITNESS_PUBKEYTYPE, mandatory=False)
    _check_sig(tx, index, sig, pub, p2pkh_script(pub), value, segwit=True)


def _pushes(script_sig: bytes) -> list[bytes]:
    try:
        ops = script_ops(script_sig)
    except DecodeError:
        raise ScriptFailure("Invalid script") from None
    if not is_push_only(script_sig):
        raise ScriptFailure(ERR_SIG_PUSHONLY)
    out: list[bytes] = []
    for op, data in ops:
        if data is not None:
            out.append(data)
        elif op == 0:
            out.append(b"")
        else:  # OP_1NEGATE / OP_1..OP_16 push small numbers
            out.append(bytes([op - 0x50]) if op != 0x4F else b"\x81")
    return out


def verify_input(tx: Transaction, index: int, spent_script: bytes, value: int) -> None:
    """Raise ScriptFailure unless input `index` validly spends (`spent_script`, `value`)."""
    inp = tx.vin[index]
    script_sig = bytes(inp.script_sig.data)
    has_witness = bool(inp.witness.items)
    kind = Script(spent_script).script_type()
    if kind == "p2wpkh":
        if script_sig:
            raise ScriptFailure(ERR_WITNESS_MALLEATED)
        _check_p2wpkh(tx, index, spent_script[2:], value)
        return
    if kind == "p2pkh":
        stack = _pushes(script_sig)
        if has_witness:
            raise ScriptFailure(ERR_WITNESS_UNEXPECTED)
        if len(stack) < 2:
            raise ScriptFailure(ERR_STACK_SIZE)
        sig, pub = stack[-2], stack[-1]
        if hash160(pub) != spent_script[3:23]:
            raise ScriptFailure(ERR_EQUALVERIFY)
        if len(pub) not in (33, 65):
            raise ScriptFailure(ERR_PUBKEYTYPE, mandatory=False)
        _check_sig(tx, index, sig, pub, spent_script, value, segwit=False)
        if len(stack) != 2:
            raise ScriptFailure("Stack size must be exactly one after execution", mandatory=False)
        return
    if kind == "p2sh":
        stack = _pushes(script_sig)
        if not stack:
            raise ScriptFailure(ERR_STACK_SIZE)
        redeem = stack[-1]
        if hash160(redeem) != spent_script[2:22]:
            raise ScriptFailure(ERR_EVAL_FALSE)
        if Script(redeem).script_type() == "p2wpkh":
            if script_sig != push_data(redeem):
                raise ScriptFailure(ERR_WITNESS_MALLEATED_P2SH)
            _check_p2wpkh(tx, index, redeem[2:], value)
            return
        raise ScriptFailure("devnode verifies only P2SH-P2WPKH redeem scripts", mandatory=False)
    raise ScriptFailure(
        f"devnode cannot verify spends of {kind or 'nonstandard'} outputs", mandatory=False
    )
