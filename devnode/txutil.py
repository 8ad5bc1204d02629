"""Transactions, scripts, addresses and amounts, on top of embit's serialization.

embit does the wire format, hashing and keys; this module adds what a node needs on top:
bitcoind's decoding rules for ambiguous zero-input transactions, weight/vsize, regtest
address rules, script classification and the JSON shapes of `decoderawtransaction`.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
from decimal import Decimal, InvalidOperation
from typing import Any

from embit import base58, bech32, compact
from embit.descriptor.checksum import add_checksum
from embit.script import Script
from embit.transaction import Transaction, TransactionInput, TransactionOutput

from devnode.errors import RPC_TYPE_ERROR, RPCError

Outpoint = tuple[str, int]

COIN = 100_000_000
MAX_MONEY = 21_000_000 * COIN
SEQUENCE_FINAL = 0xFFFFFFFF
SEQUENCE_NONFINAL = 0xFFFFFFFE
SEQUENCE_RBF = 0xFFFFFFFD
LOCKTIME_THRESHOLD = 500_000_000

# Regtest address prefixes (chainparams.cpp, CRegTestParams).
P2PKH_PREFIX = b"\x6f"
P2SH_PREFIX = b"\xc4"
BECH32_HRP = "bcrt"


class DecodeError(ValueError):
    pass


class AddressError(ValueError):
    pass


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


# ---------------------------------------------------------------- scripts

_OPCODE_TABLE = (
    "OP_NOP OP_VER OP_IF OP_NOTIF OP_VERIF OP_VERNOTIF OP_ELSE OP_ENDIF OP_VERIFY OP_RETURN "
    "OP_TOALTSTACK OP_FROMALTSTACK OP_2DROP OP_2DUP OP_3DUP OP_2OVER OP_2ROT OP_2SWAP OP_IFDUP "
    "OP_DEPTH OP_DROP OP_DUP OP_NIP OP_OVER OP_PICK OP_ROLL OP_ROT OP_SWAP OP_TUCK OP_CAT "
    "OP_SUBSTR OP_LEFT OP_RIGHT OP_SIZE OP_INVERT OP_AND OP_OR OP_XOR OP_EQUAL OP_EQUALVERIFY "
    "OP_RESERVED1 OP_RESERVED2 OP_1ADD OP_1SUB OP_2MUL OP_2DIV OP_NEGATE OP_ABS OP_NOT "
    "OP_0NOTEQUAL OP_ADD OP_SUB OP_MUL OP_DIV OP_MOD OP_LSHIFT OP_RSHIFT OP_BOOLAND OP_BOOLOR "
    "OP_NUMEQUAL OP_NUMEQUALVERIFY OP_NUMNOTEQUAL OP_LESSTHAN OP_GREATERTHAN OP_LESSTHANOREQUAL "
    "OP_GREATERTHANOREQUAL OP_MIN OP_MAX OP_WITHIN OP_RIPEMD160 OP_SHA1 OP_SHA256 OP_HASH160 "
    "OP_HASH256 OP_CODESEPARATOR OP_CHECKSIG OP_CHECKSIGVERIFY OP_CHECKMULTISIG "
    "OP_CHECKMULTISIGVERIFY OP_NOP1 OP_CHECKLOCKTIMEVERIFY OP_CHECKSEQUENCEVERIFY OP_NOP4 "
    "OP_NOP5 OP_NOP6 OP_NOP7 OP_NOP8 OP_NOP9 OP_NOP10 OP_CHECKSIGADD"
)  # in opcode order from 0x61
_OPCODE_NAMES = _OPCODE_TABLE.split()
OPCODES: dict[int, str] = {0x61 + i: name for i, name in enumerate(_OPCODE_NAMES)}
OPCODES.update({0x00: "0", 0x4F: "-1", 0x50: "OP_RESERVED"})
OPCODES.update({0x50 + n: str(n) for n in range(1, 17)})

ScriptOp = tuple[int, bytes | None]


def script_ops(data: bytes) -> list[ScriptOp]:
    """(opcode, pushed data or None); raises DecodeError on a truncated push."""
    ops: list[ScriptOp] = []
    i = 0
    while i < len(data):
        op = data[i]
        i += 1
        if 0 < op <= 0x4E:
            if op < 0x4C:
                size = op
            else:
                width = {0x4C: 1, 0x4D: 2, 0x4E: 4}[op]
                if i + width > len(data):
                    raise DecodeError("truncated push")
                size = int.from_bytes(data[i : i + width], "little")
                i += width
            if i + size > len(data):
                raise DecodeError("truncated push")
            ops.append((op, data[i : i + size]))
            i += size
        else:
            ops.append((op, None))
    return ops


def push_data(data: bytes) -> bytes:
    """Minimal push of `data` (as bitcoind's CScript << vector)."""
    n = len(data)
    if n < 0x4C:
        return bytes([n]) + data
    if n <= 0xFF:
        return b"\x4c" + bytes([n]) + data
    if n <= 0xFFFF:
        return b"\x4d" + n.to_bytes(2, "little") + data
    return b"\x4e" + n.to_bytes(4, "little") + data


def script_num(n: int) -> bytes:
    """CScript << int64 (BIP34 coinbase height): OP_0, OP_1..OP_16 or a minimal push."""
    if n == 0:
        return b"\x00"
    if 1 <= n <= 16:
        return bytes([0x50 + n])
    out = bytearray()
    value = abs(n)
    while value:
        out.append(value & 0xFF)
        value >>= 8
    if out[-1] & 0x80:
        out.append(0x80 if n < 0 else 0)
    elif n < 0:
        out[-1] |= 0x80
    return push_data(bytes(out))


def is_push_only(data: bytes) -> bool:
    try:
        return all(op <= 0x60 for op, _ in script_ops(data))
    except DecodeError:
        return False


_SIGHASH_NAMES = {1: "ALL", 2: "NONE", 3: "SINGLE", 0x81: "ALL|ANYONECANPAY",
                  0x82: "NONE|ANYONECANPAY", 0x83: "SINGLE|ANYONECANPAY"}


def script_asm(data: bytes, *, decode_sighash: bool = False) -> str:
    """ScriptToAsmStr: small pushes as numbers, others as hex, opcodes by name."""
    try:
        ops = script_ops(data)
    except DecodeError:
        return "[error]"
    words: list[str] = []
    for op, pushed in ops:
        if pushed is None:
            words.append(OPCODES.get(op, "OP_UNKNOWN"))
        elif len(pushed) <= 4:
            words.append(str(_decode_num(pushed)))
        else:
            text = pushed.hex()
            if decode_sighash and len(pushed) > 8 and pushed[0] == 0x30:
                name = _SIGHASH_NAMES.get(pushed[-1])
                if name:
                    text = pushed[:-1].hex() + f"[{name}]"
            words.append(text)
    return " ".join(words)


def _decode_num(data: bytes) -> int:
    if not data:
        return 0
    value = int.from_bytes(data, "little")
    if data[-1] & 0x80:
        return -(value & ~(0x80 << (8 * (len(data) - 1))))
    return value


def script_type(data: bytes) -> str:
    """bitcoind's TxoutType names."""
    kind = Script(data).script_type()
    if kind == "p2pkh":
        return "pubkeyhash"
    if kind == "p2sh":
        return "scripthash"
    if kind == "p2wpkh":
        return "witness_v0_keyhash"
    if kind == "p2wsh":
        return "witness_v0_scripthash"
    if kind == "p2tr":
        return "witness_v1_taproot"
    if data[:1] == b"\x6a" and is_push_only(data[1:]):
        return "nulldata"
    if len(data) in (35, 67) and data[-1] == 0xAC and data[0] in (33, 65):
        return "pubkey"
    if data[-1:] == b"\xae":
        return "multisig"
    if 4 <= len(data) <= 42 and (data[0] == 0 or 0x51 <= data[0] <= 0x60) and (
        data[1] == len(data) - 2
    ):
        return "witness_unknown"
    return "nonstandard"


def address_of(data: bytes) -> str | None:
    """The regtest address paying to `data`, when it has one."""
    kind = Script(data).script_type()
    if kind == "p2pkh":
        return base58.encode_check(P2PKH_PREFIX + data[3:23])
    if kind == "p2sh":
        return base58.encode_check(P2SH_PREFIX + data[2:22])
    if kind in ("p2wpkh", "p2wsh", "p2tr"):
        version = 0 if data[0] == 0 else data[0] - 0x50
        return str(bech32.encode(BECH32_HRP, version, data[2:]))
    return None


def script_for_address(address: Any) -> bytes:
    """Decode a regtest address; AddressError carries bitcoind's explanation."""
    if not isinstance(address, str) or not address:
        raise AddressError("Invalid address")
    if address.lower().startswith(BECH32_HRP + "1"):
        version, program = bech32.decode(BECH32_HRP, address)
        if version is None or program is None:
            raise AddressError("Invalid Bech32 address")
        prog = bytes(program)
        if version == 0 and len(prog) not in (20, 32):
            raise AddressError("Invalid Bech32 v0 address program size")
        return bytes([0 if version == 0 else 0x50 + version, len(prog)]) + prog
    try:
        payload = base58.decode_check(address)
    except Exception:
        raise AddressError("Invalid or unsupported Segwit (Bech32) or Base58 encoding.") from None
    if len(payload) == 21 and payload[:1] == P2PKH_PREFIX:
        return b"\x76\xa9\x14" + payload[1:] + b"\x88\xac"
    if len(payload) == 21 and payload[:1] == P2SH_PREFIX:
        return b"\xa9\x14" + payload[1:] + b"\x87"
    raise AddressError("Invalid or unsupported Base58-encoded address.")


def script_pubkey_json(data: bytes) -> dict[str, Any]:
    out: dict[str, Any] = {"asm": script_asm(data)}
    address = address_of(data)
    desc = f"addr({address})" if address else f"raw({data.hex()})"
    out["desc"] = add_checksum(desc)
    out["hex"] = data.hex()
    if address:
        out["address"] = address
    out["type"] = script_type(data)
    return out


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


def dust_threshold(script: bytes) -> int:
    """GetDustThreshold at the default dust relay fee (3000 sat/kvB)."""
    if script[:1] == b"\x6a":
        return 0
    spend_size = 8 + len(compact.to_bytes(len(script))) + len(script)
    kind = Script(script).script_type()
    if kind in ("p2wpkh", "p2wsh", "p2tr") or script_type(script) == "witness_unknown":
        spend_size += 32 + 4 + 1 + (107 // 4) + 4
    else:
        spend_size += 32 + 4 + 1 + 107 + 4
    return 3 * spend_size
