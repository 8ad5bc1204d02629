"""Checks on what a client asks us to pay: destination address, amount, metadata, keys.

Pure functions, no I/O, so the API, the CLI and the demo all refuse the same things with the
same words. Each failure is a `ValidationError` (a `DomainError`, code `invalid_request`) naming
the offending field.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any

from embit.networks import NETWORKS
from embit.script import Script, address_to_scriptpubkey

from shared.core.errors import DomainError, ErrorKind
from shared.infra.settings import DUST_LIMIT_SATS, Network

# Our network names (settings) -> embit's. Testnet, signet and regtest share base58 version
# bytes, so a base58 testnet address is also a valid regtest/signet address; bech32 differs
# by human-readable part (tb / bcrt).
EMBIT_NETWORK: dict[str, str] = {
    "mainnet": "main",
    "testnet": "test",
    "signet": "signet",
    "regtest": "regtest",
}

# Script types embit can render back into an address; anything else has no address form.
_ADDRESS_SCRIPT_TYPES = frozenset({"p2pkh", "p2sh", "p2wpkh", "p2wsh", "p2tr"})

# The longest valid segwit address is 90 characters (BIP173); base58 ones are ~35.
MAX_ADDRESS_LENGTH = 90
# Metadata is for the client's references (invoice, order); deep nesting only costs us.
MAX_METADATA_DEPTH = 16
# Free-text reasons end up in the audit trail; a paragraph is plenty.
MAX_REASON_LENGTH = 500
# The idempotency_keys.key column is VARCHAR(255).
MAX_IDEMPOTENCY_KEY_LENGTH = 255
# validate_idempotency_key's rule as a regex, for the OpenAPI document: printable ASCII. No
# leading or trailing space, which HTTP strips from header values before we see them.
IDEMPOTENCY_KEY_PATTERN = r"^[!-~]([ -~]*[!-~])?$"


class ValidationError(DomainError):
    """Bad client input. `field` names what was wrong, `reason` says why; `message` is both,
    for humans (`"amount_sats must be positive, got 0"`)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__("invalid_request", f"{field} {reason}", ErrorKind.INVALID)
        self.field = field
        self.reason = reason


def _decode(address: str) -> Script | None:
    """embit's decoder, with its quirks contained: it raises assorted exception types on
    garbage and returns None for a base58 string with a checksum but an unknown version byte."""
    try:
        script = address_to_scriptpubkey(address)
    except Exception:
        return None
    if not isinstance(script, Script) or script.script_type() not in _ADDRESS_SCRIPT_TYPES:
        return None
    return script


def _encodes_as(script: Script, address: str, embit_network: str) -> bool:
    # Re-encoding for a network and comparing is what pins the address to that network: the
    # decoder accepts every network's prefixes. It also rejects base58 payloads of the wrong
    # length, which embit's decoder lets through.
    try:
        return bool(script.address(NETWORKS[embit_network]) == address)
    except Exception:
        return False


def validate_address(address: object, network: Network) -> str:
    """Return the address in canonical form if it is valid Bitcoin for `network`.

    Accepts base58check P2PKH/P2SH and bech32 (v0) / bech32m (v1 taproot) addresses with
    verified checksums. All-uppercase bech32 (allowed by BIP173, common in QR codes) is
    returned lowercased; mixed case is refused.
    """
    field = "destination"
    if not isinstance(address, str):
        raise ValidationError(field, "must be a string holding a Bitcoin address")
    if not address:
        raise ValidationError(field, "must not be empty")
    if address != address.strip():
        raise ValidationError(field, "must not contain leading or trailing whitespace")
    if len(address) > MAX_ADDRESS_LENGTH or not address.isascii():
        raise ValidationError(field, "is not a valid Bitcoin address")

    candidate = address.lower() if address.isupper() else address
    script = _decode(candidate)
    if script is None:
        raise ValidationError(
            field,
            "is not a valid Bitcoin address (expected base58 P2PKH/P2SH or bech32/bech32m "
            "with a correct checksum)",
        )
    if _encodes_as(script, candidate, EMBIT_NETWORK[network]):
        return candidate
    other = next(
        (ours for ours, theirs in EMBIT_NETWORK.items() if _encodes_as(script, candidate, theirs)),
        None,
    )
    if other is None:
        raise ValidationError(field, "is not a valid Bitcoin address for any known network")
    raise ValidationError(field, f"is a {other} address, but this service pays out on {network}")


def validate_amount(amount_sats: object, max_payout_sats: int) -> int:
    """Return the amount if it is a whole number of satoshis within [dust limit, hard cap]."""
    field = "amount_sats"
    # bool is an int subclass; `true` must not become 1 sat.
    if isinstance(amount_sats, bool) or not isinstance(amount_sats, int):
        raise ValidationError(field, "must be an integer number of satoshis")
    if amount_sats <= 0:
        raise ValidationError(field, f"must be positive, got {amount_sats}")
    if amount_sats < DUST_LIMIT_SATS:
        raise ValidationError(
            field,
            f"{amount_sats} is below the dust limit of {DUST_LIMIT_SATS} sats; "
            "the network would not relay such an output",
        )
    if amount_sats > max_payout_sats:
        raise ValidationError(
            field, f"{amount_sats} is above the maximum payout of {max_payout_sats} sats"
        )
    return amount_sats


def validate_metadata(metadata: object) -> dict[str, Any]:
    """Metadata is an optional JSON object the client gets back verbatim; absent means {}."""
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise ValidationError("metadata", "must be a JSON object")
    _check_json_value(metadata, depth=1, path="metadata")
    return metadata


def _check_json_value(value: object, depth: int, path: str) -> None:
    # Python's JSON parser accepts NaN/Infinity (and 1e400 becomes inf), which PostgreSQL's
    # json type refuses: catch them here as bad input rather than as a database error.
    if isinstance(value, float) and not math.isfinite(value):
        raise ValidationError("metadata", "numbers must be finite (no NaN or Infinity)")
    if isinstance(value, str):
        if not is_unicode_text(value):
            raise _surrogate_error(f"the string at {path}")
        return
    if not isinstance(value, dict | list):
        return
    if depth > MAX_METADATA_DEPTH:
        raise ValidationError("metadata", f"is nested deeper than {MAX_METADATA_DEPTH} levels")
    items: Iterable[tuple[str, object]]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise ValidationError("metadata", "must be a JSON object")
        if not all(is_unicode_text(k) for k in value):
            raise _surrogate_error(f"a key in {path}")
        # json.dumps escapes whatever the key holds, so the path itself is always printable.
        items = ((f"{path}[{json.dumps(k)}]", v) for k, v in value.items())
    else:
        items = ((f"{path}[{i}]", v) for i, v in enumerate(value))
    for item_path, item in items:
        _check_json_value(item, depth + 1, item_path)


def is_unicode_text(text: str) -> bool:
    """False if `text` holds a lone UTF-16 surrogate (U+D800-U+DFFF).

    JSON's `"\\ud800"` escape without its pair decodes to one; such a string has no UTF-8 form,
    so it can be neither fingerprinted, stored nor sent back. A correctly paired escape
    (`"\\ud83d\\ude00"`) decodes to one ordinary character and is fine.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _surrogate_error(where: str) -> ValidationError:
    return ValidationError(
        "metadata",
        "must be valid Unicode text: a lone UTF-16 surrogate (a \\ud800-\\udfff escape without "
        f"its pair) was found in {where}",
    )


def validate_idempotency_key(key: object) -> str:
    """A client-chosen key: 1-255 printable ASCII characters (it is stored and compared)."""
    field = "Idempotency-Key"
    if not isinstance(key, str) or not key:
        raise ValidationError(field, "is required")
    if len(key) > MAX_IDEMPOTENCY_KEY_LENGTH:
        raise ValidationError(field, f"must be at most {MAX_IDEMPOTENCY_KEY_LENGTH} characters")
    if not key.isascii() or not key.isprintable():
        raise ValidationError(field, "must be printable ASCII")
    return key


def validate_reason(reason: object) -> str | None:
    """An optional human note for the audit trail: text without control characters (NUL
    cannot even be stored in a PostgreSQL text column), at most MAX_REASON_LENGTH long."""
    if reason is None:
        return None
    if not isinstance(reason, str):
        raise ValidationError("reason", "must be a string")
    if not is_unicode_text(reason):
        raise ValidationError(
            "reason", "must be valid Unicode text (it holds a lone UTF-16 surrogate)"
        )
    if len(reason) > MAX_REASON_LENGTH:
        raise ValidationError("reason", f"must be at most {MAX_REASON_LENGTH} characters")
    if any(not ch.isprintable() and ch not in "\n\t" for ch in reason):
        raise ValidationError("reason", "must not contain control characters")
    return reason
