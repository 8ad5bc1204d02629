"""Transactions and amounts, on top of embit's serialization.

embit does the wire format, hashing and keys; this module adds what a node needs on top:
bitcoind's decoding rules for ambiguous zero-input transactions, weight/vsize, amount
parsing (AmountFromValue) and the JSON shape of `decoderawtransaction`. Scripts and
addresses are in `devnode.scriptcode`.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
from decimal import Decimal, InvalidOperation
from typing import Any

from embit import compact
from embit.transaction import Transaction, TransactionInput, TransactionOutput

from devnode.errors import RPC_TYPE_ERROR, RPCError
from devnode.scriptcode import DecodeError, script_asm, script_ops, script_pubkey_json

Outpoint = tuple[str, int]

COIN = 100_000_000
MAX_MONEY = 21_000_000 * COIN
SEQUENCE_FINAL = 0xFFFFFFFF
SEQUENCE_NONFINAL = 0xFFFFFFFE
SEQUENCE_RBF = 0xFFFFFFFD
LOCKTIME_THRESHOLD = 500_000_000



# ---------------------------------------------------------------- amounts


def btc(sats: int) -> Decimal:
    """Satoshis as the 8-decimal BTC amount bitcoind prints."""
    return (Decimal(sats) / COIN).quantize(Decimal("0.00000001"))


def amount_to_sats(value: Any, *, allow_negative: bool = False) -> int:
    """bitcoind's AmountFromValue: a JSON number or string of BTC with at most 8 decimals."""
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal, str)):
        raise RPCError(RPC_TYPE_ERROR, "Amount is not a number or string")
    try:
        amount = Decimal(str(value)) if not isinstance(value, Decimal) else value
    except InvalidOperation:
        raise RPCError(RPC_TYPE_ERROR, "Invalid amount") from None
    if not amount.is_finite():
        raise RPCError(RPC_TYPE_ERROR, "Invalid amount")
    sats = amount * COIN
    if sats != sats.to_integral_value():
        raise RPCError(RPC_TYPE_ERROR, "Invalid amount")
    result = int(sats)
    if (result < 0 and not allow_negative) or abs(result) > MAX_MONEY:
        raise RPCError(RPC_TYPE_ERROR, "Amount out of range")
    return result


def fee_rate_to_sat_per_kvb(value: Any, *, unit: str) -> int:
    """`fee_rate` (sat/vB, 3 decimals) or `feeRate` (BTC/kvB) as bitcoind's CFeeRate (sat/kvB)."""
    if unit == "sat/vB":
        # AmountFromValue(value, decimals=3): 1.234 sat/vB is 1234 sat/kvB.
        sats = amount_to_sats(value)  # value * 1e8, must be integral at 8 decimals
        per_kvb, rest = divmod(sats * 1000, COIN)
        if rest:
            raise RPCError(RPC_TYPE_ERROR, "Invalid amount")
        return per_kvb
    return amount_to_sats(value)


def fee_for(sat_per_kvb: int, vsize: int) -> int:
    """CFeeRate::GetFee: rounded up, so the paid rate is never below the asked one."""
    return -(-sat_per_kvb * vsize // 1000)


# ---------------------------------------------------------------- hashing and encoding


def dsha256(data: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


def hash160(data: bytes) -> bytes:
    from embit.hashes import hash160 as _h160

    return bytes(_h160(data))


def txid_of(tx: Transaction) -> str:
    return bytes(tx.txid()).hex()


def wtxid_of(tx: Transaction) -> str:
    return dsha256(tx.serialize())[::-1].hex()


def outpoints_of(tx: Transaction) -> list[Outpoint]:
    return [(bytes(vin.txid).hex(), vin.vout) for vin in tx.vin]


def is_coinbase(tx: Transaction) -> bool:
    return len(tx.vin) == 1 and bytes(tx.vin[0].txid) == b"\x00" * 32 and (
        tx.vin[0].vout == 0xFFFFFFFF
    )


def stripped_size(tx: Transaction) -> int:
    return len(serialize_no_witness(tx))


def serialize_no_witness(tx: Transaction) -> bytes:
    out = tx.version.to_bytes(4, "little") + compact.to_bytes(len(tx.vin))
    out += b"".join(vin.serialize() for vin in tx.vin)
    out += compact.to_bytes(len(tx.vout)) + b"".join(o.serialize() for o in tx.vout)
    return out + tx.locktime.to_bytes(4, "little")


def weight_of(tx: Transaction) -> int:
    return stripped_size(tx) * 3 + len(tx.serialize())


def vsize_of(tx: Transaction) -> int:
    return (weight_of(tx) + 3) // 4


def copy_tx(tx: Transaction) -> Transaction:
    """A deep copy (embit caches sighash midstates on the object, so never share one)."""
    return Transaction.parse(tx.serialize())


# ---------------------------------------------------------------- decoding


def _read_legacy(raw: bytes) -> Transaction:
    stream = io.BytesIO(raw)
    version = int.from_bytes(_take(stream, 4), "little")
    vin = [TransactionInput.read_from(stream) for _ in range(compact.read_from(stream))]
    vout = [TransactionOutput.read_from(stream) for _ in range(compact.read_from(stream))]
    locktime = int.from_bytes(_take(stream, 4), "little")
    if stream.read(1):
        raise DecodeError("trailing bytes")
    return Transaction(version=version, vin=vin, vout=vout, locktime=locktime)


def _read_extended(raw: bytes) -> Transaction:
    stream = io.BytesIO(raw)
    tx = Transaction.read_from(stream)
    if stream.read(1):
        raise DecodeError("trailing bytes")
    if raw[4:6] == b"\x00\x01" and not tx.is_segwit:
        # bitcoind: "Superfluous witness record" — a witness flag with only empty witnesses.
        raise DecodeError("superfluous witness record")
    return tx


def _take(stream: io.BytesIO, n: int) -> bytes:
    data = stream.read(n)
    if len(data) != n:
        raise DecodeError("unexpected end of data")
    return data


def parse_tx(raw: bytes, *, try_witness: bool = True, try_no_witness: bool = True) -> Transaction:
    """bitcoind's DecodeHexTx: a zero-input legacy transaction and a segwit one share the
    `00` byte after the version, so try both and prefer the reading that consumes every byte
    and whose scripts look sane (DecodeTx in core_read.cpp)."""
    candidates: list[Transaction] = []
    if try_witness:
        # embit raises assorted exception types on malformed input.
        with contextlib.suppress(Exception):
            candidates.append(_read_extended(raw))
    if try_no_witness:
        with contextlib.suppress(Exception):
            candidates.append(_read_legacy(raw))
    for tx in candidates:
        if tx.vin and _scripts_sane(tx):
            return tx
    for tx in candidates:
        if _scripts_sane(tx):
            return tx
    if candidates:
        return candidates[0]
    raise DecodeError("TX decode failed")


def _scripts_sane(tx: Transaction) -> bool:
    try:
        for out in tx.vout:
            script_ops(out.script_pubkey.data)
        return True
    except DecodeError:
        return False


def tx_from_hex(hexstr: Any, *, try_witness: bool = True, try_no_witness: bool = True) -> (
    Transaction
):
    if not isinstance(hexstr, str):
        raise DecodeError("not a string")
    try:
        raw = bytes.fromhex(hexstr)
    except ValueError:
        raise DecodeError("not hex") from None
    return parse_tx(raw, try_witness=try_witness, try_no_witness=try_no_witness)


def tx_to_json(tx: Transaction) -> dict[str, Any]:
    """TxToUniv without block data: the `decoderawtransaction` shape."""
    vin: list[dict[str, Any]] = []
    for inp in tx.vin:
        entry: dict[str, Any]
        if is_coinbase(tx):
            entry = {"coinbase": inp.script_sig.data.hex()}
        else:
            sig = inp.script_sig.data
            entry = {
                "txid": bytes(inp.txid).hex(),
                "vout": inp.vout,
                "scriptSig": {"asm": script_asm(sig, decode_sighash=True), "hex": sig.hex()},
            }
        if inp.witness.items:
            entry["txinwitness"] = [bytes(item).hex() for item in inp.witness.items]
        entry["sequence"] = inp.sequence
        vin.append(entry)
    vout = [
        {"value": btc(out.value), "n": n,
         "scriptPubKey": script_pubkey_json(bytes(out.script_pubkey.data))}
        for n, out in enumerate(tx.vout)
    ]
    return {
        "txid": txid_of(tx),
        "hash": wtxid_of(tx),
        "version": tx.version,
        "size": len(tx.serialize()),
        "vsize": vsize_of(tx),
        "weight": weight_of(tx),
        "locktime": tx.locktime,
        "vin": vin,
        "vout": vout,
    }


def signals_rbf(tx: Transaction) -> bool:
    return any(inp.sequence <= SEQUENCE_RBF for inp in tx.vin)
