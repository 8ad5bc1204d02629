"""Every signature must commit to the whole transaction (SIGHASH_ALL).

A signature made with SIGHASH_NONE or SIGHASH_SINGLE leaves outputs uncovered: anyone who sees
the transaction in a mempool can rewrite those outputs to pay themselves and, under full RBF,
replace ours with a slightly higher fee. With ANYONECANPAY anyone can add inputs, which changes
the txid, so the transaction we stored never confirms. So a transaction we persist and
broadcast may carry only SIGHASH_ALL signatures (or Taproot's SIGHASH_DEFAULT, which is ALL).

This reads the signatures out of the serialized transaction itself, not a PSBT's metadata: the
bytes that are broadcast are what counts.
"""

from __future__ import annotations

from embit.transaction import Transaction

from shared.sending.payment_check import PaymentMismatch

SIGHASH_ALL = 0x01
# A DER-encoded ECDSA signature plus its sighash byte is 9 to 73 bytes (BIP66).
DER_SIG_MIN, DER_SIG_MAX = 9, 73
SCHNORR_SIG = 64  # BIP341: 64 bytes means SIGHASH_DEFAULT; 65 carries an explicit type


def check_signatures_cover_everything(raw_hex: str) -> None:
    """Raise `PaymentMismatch` unless every input is signed, and only with SIGHASH_ALL."""
    try:
        tx = Transaction.from_string(raw_hex)
    except Exception as exc:  # embit raises several types; the node decoded it already
        raise PaymentMismatch("invalid_transaction", f"cannot read the transaction: {exc}") from exc
    for index, vin in enumerate(tx.vin):
        witness = list(vin.witness.items) if vin.witness else []
        sighashes = _sighash_types(witness, _pushes(vin.script_sig.data))
        if not sighashes:
            raise PaymentMismatch(
                "unsigned_input",
                f"input {index} carries no signature that can be read; sign every input "
                "with SIGHASH_ALL",
            )
        wrong = [t for t in sighashes if t != SIGHASH_ALL]
        if wrong:
            raise PaymentMismatch(
                "sighash_not_all",
                f"input {index} is signed with sighash type 0x{wrong[0]:02x}; only SIGHASH_ALL "
                "(0x01) is accepted: any other type lets others change the outputs or inputs "
                "after signing",
            )


def _sighash_types(witness: list[bytes], script_sig_pushes: list[bytes]) -> list[int]:
    if len(witness) == 1 and len(witness[0]) in (SCHNORR_SIG, SCHNORR_SIG + 1):
        sig = witness[0]  # a Taproot key-path spend
        return [SIGHASH_ALL if len(sig) == SCHNORR_SIG else sig[-1]]
    return [item[-1] for item in [*witness, *script_sig_pushes] if _looks_like_der_sig(item)]


def _looks_like_der_sig(item: bytes) -> bool:
    # 0x30 <length of the rest without the sighash byte> ...: a DER SEQUENCE, then one byte.
    return DER_SIG_MIN <= len(item) <= DER_SIG_MAX and item[0] == 0x30 and item[1] == len(item) - 3


def _pushes(script: bytes) -> list[bytes]:
    """The data pushed by a scriptSig (which, standard, holds nothing but pushes)."""
    items: list[bytes] = []
    i = 0
    while i < len(script):
        op = script[i]
        i += 1
        if 1 <= op <= 75:
            size = op
        elif op in (0x4C, 0x4D, 0x4E):  # OP_PUSHDATA1/2/4
            width = {0x4C: 1, 0x4D: 2, 0x4E: 4}[op]
            size = int.from_bytes(script[i : i + width], "little")
            i += width
        else:
            continue  # OP_0 and small-number opcodes push no signature
        items.append(script[i : i + size])
        i += size
    return items
