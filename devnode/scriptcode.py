"""Scripts and regtest addresses: parsing pushes, disassembly, bitcoind's script type
names, address encoding and decoding, dust thresholds."""

from __future__ import annotations

import functools
from typing import Any

from embit import base58, bech32, compact
from embit.descriptor.checksum import add_checksum
from embit.script import Script

# Regtest address prefixes (chainparams.cpp, CRegTestParams).
P2PKH_PREFIX = b"\x6f"
P2SH_PREFIX = b"\xc4"
BECH32_HRP = "bcrt"


class DecodeError(ValueError):
    pass


class AddressError(ValueError):
    pass


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


@functools.lru_cache(maxsize=65_536)
def address_of(data: bytes) -> str | None:
    """The regtest address paying to `data`, when it has one (cached: embit's bech32
    encoding costs about half a millisecond, and batches decode the same outputs often)."""
    kind = Script(data).script_type()
    if kind == "p2pkh":
        return base58.encode_check(P2PKH_PREFIX + data[3:23])
    if kind == "p2sh":
        return base58.encode_check(P2SH_PREFIX + data[2:22])
    if kind in ("p2wpkh", "p2wsh", "p2tr"):
        version = 0 if data[0] == 0 else data[0] - 0x50
        # bech32.encode, without its decode-again self check (the program is well formed).
        encoding = bech32.Encoding.BECH32 if version == 0 else bech32.Encoding.BECH32M
        words = bech32.convertbits(data[2:], 8, 5)
        return str(bech32.bech32_encode(encoding, BECH32_HRP, [version, *words]))
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
    return dict(_script_pubkey_json(bytes(data)))


@functools.lru_cache(maxsize=65_536)
def _script_pubkey_json(data: bytes) -> dict[str, Any]:
    out: dict[str, Any] = {"asm": script_asm(data)}
    address = address_of(data)
    desc = f"addr({address})" if address else f"raw({data.hex()})"
    out["desc"] = add_checksum(desc)
    out["hex"] = data.hex()
    if address:
        out["address"] = address
    out["type"] = script_type(data)
    return out


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
