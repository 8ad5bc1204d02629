"""Address, amount, metadata and idempotency-key validation (no I/O)."""

from __future__ import annotations

import pytest
from embit import base58

from shared.core.validation import (
    MAX_METADATA_DEPTH,
    MAX_REASON_LENGTH,
    ValidationError,
    validate_address,
    validate_amount,
    validate_idempotency_key,
    validate_metadata,
    validate_reason,
)
from shared.infra.settings import DUST_LIMIT_SATS

NETWORKS = ("mainnet", "testnet", "signet", "regtest")

# (address, networks it is valid on). Vectors from BIP173/BIP350 and well-known addresses.
VALID = [
    ("1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa", {"mainnet"}),  # P2PKH
    ("3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy", {"mainnet"}),  # P2SH
    ("bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4", {"mainnet"}),  # P2WPKH
    ("bc1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3qccfmv3", {"mainnet"}),  # P2WSH
    ("bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqzk5jj0", {"mainnet"}),  # P2TR
    ("tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx", {"testnet", "signet"}),
    ("tb1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3q0sl5k7", {"testnet", "signet"}),
    ("tb1pqqqqp399et2xygdj5xreqhjjvcmzhxw4aywxecjdzew6hylgvsesf3hn0c", {"testnet", "signet"}),
    ("bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080", {"regtest"}),
    ("bcrt1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3qzf4jry", {"regtest"}),
    # Testnet, signet and regtest share base58 version bytes.
    ("mipcBbFg9gMiCh81Kj8tqqdgoZub1ZJRfn", {"testnet", "signet", "regtest"}),  # P2PKH
    ("2MzQwSSnBHWHqSAqtTVQ6v47XtaisrJa1Vc", {"testnet", "signet", "regtest"}),  # P2SH
]

# Invalid everywhere: the BIP173/BIP350 invalid vectors plus base58 corruptions.
INVALID = [
    "tc1qw508d6qejxtdg4y5r3zarvary0c5xw7kg3g4ty",  # unknown human-readable part
    "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t5",  # bad checksum
    "BC13W508D6QEJXTDG4Y5R3ZARVARY0C5XW7KN40WF2",  # invalid witness version
    "bc1rw5uspcuh",  # program too short
    "bc10w508d6qejxtdg4y5r3zarvary0c5xw7kw508d6qejxtdg4y5r3zarvary0c5xw7kw5rljs90",  # too long
    "BC1QR508D6QEJXTDG4Y5R3ZARVARYV98GJ9P",  # v0 program of wrong length
    "tb1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3q0sL5k7",  # mixed case
    "bc1zw508d6qejxtdg4y5r3zarvaryvqyzf3du",  # wrong padding
    "tb1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3pjxtptv",  # non-zero padding
    "bc1gmk9yu",  # empty data
    "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqh2y7hd",  # v1 with bech32 checksum
    "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kemeawh",  # v0 with bech32m checksum
    "tb1q0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vq24jc47",  # v0 with bech32m
    "bc1p38j9r5y49hruaue7wxjce0updqjuyyx0kh56v8s25huc6995vvpql3jow4",  # bad checksum char
    "bc1pw5dgrnzv",  # v1 program too short
    "1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNb",  # base58 checksum broken
    "1A1zP1eP5QGefi2DMPTfTL5SLmv7Divf",  # truncated
    "1A1zP1eP5QGefi2DMPTfTL5SLmv7Divf0a",  # '0' is not base58
    base58.encode_check(b"\x00" + b"\x11" * 19),  # valid checksum, 19-byte hash
    base58.encode_check(b"\x30" + b"\x11" * 20),  # valid checksum, unknown version byte
    "not an address",
    "",
]


class TestValidateAddress:
    @pytest.mark.parametrize(("address", "valid_on"), VALID)
    def test_valid_address_is_accepted_exactly_on_its_networks(
        self, address: str, valid_on: set[str]
    ) -> None:
        for network in NETWORKS:
            if network in valid_on:
                assert validate_address(address, network) == address  # type: ignore[arg-type]
            else:
                with pytest.raises(ValidationError, match="address, but this service pays"):
                    validate_address(address, network)  # type: ignore[arg-type]

    @pytest.mark.parametrize("address", INVALID)
    def test_invalid_address_is_refused_on_every_network(self, address: str) -> None:
        for network in NETWORKS:
            with pytest.raises(ValidationError) as caught:
                validate_address(address, network)  # type: ignore[arg-type]
            assert caught.value.field == "destination"

    def test_uppercase_bech32_is_accepted_and_lowercased(self) -> None:
        upper = "BC1QW508D6QEJXTDG4Y5R3ZARVARY0C5XW7KV8F3T4"

        assert validate_address(upper, "mainnet") == upper.lower()

    def test_wrong_network_message_names_both_networks(self) -> None:
        with pytest.raises(ValidationError) as caught:
            validate_address("bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4", "regtest")

        assert "mainnet" in caught.value.message and "regtest" in caught.value.message

    def test_surrounding_whitespace_is_refused_not_stripped(self) -> None:
        with pytest.raises(ValidationError, match="whitespace"):
            validate_address(" bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080", "regtest")

    @pytest.mark.parametrize("value", [None, 42, b"bcrt1q", ["x"]])
    def test_non_string_is_refused(self, value: object) -> None:
        with pytest.raises(ValidationError, match="string"):
            validate_address(value, "regtest")

    def test_non_ascii_is_refused(self) -> None:
        with pytest.raises(ValidationError):
            validate_address("bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt08ö", "regtest")


class TestValidateAmount:
    @pytest.mark.parametrize("amount", [DUST_LIMIT_SATS, 10_000, 1_000_000])
    def test_amount_within_bounds_is_accepted(self, amount: int) -> None:
        assert validate_amount(amount, max_payout_sats=1_000_000) == amount

    @pytest.mark.parametrize(
        ("amount", "fragment"),
        [
            (0, "positive"),
            (-1, "positive"),
            (DUST_LIMIT_SATS - 1, "dust limit"),
            (1_000_001, "maximum payout of 1000000"),
            (10**30, "maximum payout"),
            (1.5, "integer"),
            (1000.0, "integer"),
            ("1000", "integer"),
            (True, "integer"),
            (None, "integer"),
        ],
    )
    def test_amount_out_of_bounds_or_not_an_integer_is_refused(
        self, amount: object, fragment: str
    ) -> None:
        with pytest.raises(ValidationError, match=fragment) as caught:
            validate_amount(amount, max_payout_sats=1_000_000)
        assert caught.value.field == "amount_sats"


class TestValidateMetadata:
    def test_absent_metadata_becomes_empty_object(self) -> None:
        assert validate_metadata(None) == {}

    def test_object_is_returned_unchanged(self) -> None:
        assert validate_metadata({"order": 7, "tags": ["a"]}) == {"order": 7, "tags": ["a"]}

    @pytest.mark.parametrize("value", [[1, 2], "text", 3, {1: "non-string key"}])
    def test_non_object_is_refused(self, value: object) -> None:
        with pytest.raises(ValidationError, match="JSON object"):
            validate_metadata(value)

    @pytest.mark.parametrize(
        "value",
        [{"x": float("nan")}, {"x": [1, float("inf")]}, {"x": {"y": -float("inf")}}],
    )
    def test_non_finite_numbers_are_refused(self, value: object) -> None:
        with pytest.raises(ValidationError, match="finite"):
            validate_metadata(value)

    def test_nesting_beyond_the_limit_is_refused(self) -> None:
        ok: dict[str, object] = {"leaf": 1}
        for _ in range(MAX_METADATA_DEPTH - 1):
            ok = {"a": ok}
        assert validate_metadata(ok) == ok

        with pytest.raises(ValidationError, match="nested"):
            validate_metadata({"a": ok})

    @pytest.mark.parametrize(
        ("value", "where"),
        [
            ({"a": "\ud800"}, 'the string at metadata["a"]'),
            ({"\udfff": 1}, "a key in metadata"),
            ({"a": {"b": ["ok", "x\udc00y"]}}, 'the string at metadata["a"]["b"][1]'),
            ({"a": [{"\ud83d": None}]}, 'a key in metadata["a"][0]'),
        ],
    )
    def test_lone_surrogates_in_keys_or_values_are_refused(self, value: object, where: str) -> None:
        # JSON's \ud800 escape decodes to a lone surrogate, which has no UTF-8 encoding: it can
        # be neither fingerprinted nor stored, so it is bad input, named with where it was.
        with pytest.raises(ValidationError, match="surrogate") as refused:
            validate_metadata(value)

        assert refused.value.field == "metadata"
        assert where in refused.value.message

    def test_paired_surrogates_from_json_are_ordinary_text(self) -> None:
        # "\ud83d\ude00" in JSON is one character (😀) once parsed: nothing to refuse.
        assert validate_metadata({"smile": "\U0001f600"}) == {"smile": "\U0001f600"}


class TestValidateIdempotencyKey:
    def test_printable_key_is_accepted(self) -> None:
        assert validate_idempotency_key("order-7/refund 1") == "order-7/refund 1"

    @pytest.mark.parametrize("key", ["", None, "x" * 256, "tab\there", "nön-ascii"])
    def test_empty_long_or_unprintable_key_is_refused(self, key: object) -> None:
        with pytest.raises(ValidationError):
            validate_idempotency_key(key)


class TestValidateReason:
    def test_lone_surrogate_is_refused_as_invalid_text(self) -> None:
        with pytest.raises(ValidationError, match="surrogate"):
            validate_reason("oops \ud800")

    @pytest.mark.parametrize("reason", [None, "customer asked", "line one\nline two\tend"])
    def test_plain_text_or_nothing_is_accepted(self, reason: str | None) -> None:
        assert validate_reason(reason) == reason

    @pytest.mark.parametrize(
        "reason", ["nul\x00byte", "bell\x07", "x" * (MAX_REASON_LENGTH + 1), 42]
    )
    def test_control_characters_overlong_or_non_text_is_refused(self, reason: object) -> None:
        with pytest.raises(ValidationError):
            validate_reason(reason)
