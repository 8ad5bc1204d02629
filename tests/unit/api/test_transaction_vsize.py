"""vsize_from_raw_hex (shared/sending/transaction_views.py), which gives `GET /v1/transactions`
a size for rows stored before migration 0003: BIP141 weight from the serialization, checked
against hand-counted transactions and against embit's serialization (the simulated node's
own vsize), and refusing bytes that are not exactly one transaction.

It lives with the API tests because the API is its only user."""

from __future__ import annotations

import pytest
from embit.script import Script, Witness
from embit.transaction import Transaction, TransactionInput, TransactionOutput
from hypothesis import given, settings
from hypothesis import strategies as st

from devnode.txutil import vsize_of
from shared.core.validation import ValidationError
from shared.sending.transaction_views import normalize_txid, vsize_from_raw_hex

P2WPKH = "0014" + "22" * 20


def legacy_hex() -> str:
    """1 input with a 107-byte scriptSig (P2PKH), 1 P2WPKH output: 4 + 1 + (36 + 1 + 107 + 4)
    + 1 + (8 + 1 + 22) + 4 = 189 bytes, no witness: weight 756, vsize 189."""
    return (
        "02000000" "01" + "11" * 32 + "00000000" "6b" + "aa" * 107 + "ffffffff"
        "01" "e803000000000000" "16" + P2WPKH + "00000000"
    )  # fmt: skip


def segwit_hex() -> str:
    """1 P2WPKH input (72-byte signature, 33-byte key), 2 P2WPKH outputs: stripped 113 bytes,
    total 223 (marker and flag 2, witness 108): weight 3 * 113 + 223 = 562, vsize 141."""
    return (
        "02000000" "0001" "01" + "11" * 32 + "00000000" "00" "fdffffff"
        "02" + ("e803000000000000" "16" + P2WPKH) * 2
        + "02" "48" + "30" * 72 + "21" + "02" * 33 + "00000000"
    )  # fmt: skip


def test_a_legacy_transaction_weighs_four_units_a_byte() -> None:
    assert len(legacy_hex()) // 2 == 189
    assert vsize_from_raw_hex(legacy_hex()) == 189


def test_witness_bytes_weigh_a_quarter() -> None:
    assert len(segwit_hex()) // 2 == 223
    assert vsize_from_raw_hex(segwit_hex()) == 141  # ceil(562 / 4)


def test_uppercase_hex_is_the_same_transaction() -> None:
    assert vsize_from_raw_hex(segwit_hex().upper()) == 141


def test_a_witness_item_over_252_bytes_uses_a_three_byte_length() -> None:
    # A 2-of-3 P2WSH spend: empty item, two signatures, a 300-byte witness script.
    raw = (
        "02000000" "0001" "01" + "11" * 32 + "00000000" "00" "fdffffff"
        "01" "e803000000000000" "16" + P2WPKH
        + "04" "00" "48" + "30" * 72 + "48" + "30" * 72 + "fd2c01" + "51" * 300 + "00000000"
    )  # fmt: skip
    stripped = 4 + 1 + 41 + 1 + 31 + 4
    witness = 1 + 1 + 73 + 73 + 3 + 300
    total = stripped + 2 + witness

    assert vsize_from_raw_hex(raw) == -(-(3 * stripped + total) // 4)


@st.composite
def transactions(draw: st.DrawFn) -> Transaction:
    """Transactions of 1-4 inputs and 1-300 outputs (past the one-byte count at 253), with
    or without witnesses (some inputs of a segwit transaction with an empty stack)."""
    segwit = draw(st.booleans())
    vin = []
    for index in range(draw(st.integers(1, 4))):
        items = draw(st.lists(st.binary(max_size=600), max_size=4)) if segwit else []
        if segwit and index == 0 and not items:
            items = [b"\x01"]  # embit writes the witness only if some input has one
        vin.append(
            TransactionInput(
                draw(st.binary(min_size=32, max_size=32)),
                draw(st.integers(0, 2**32 - 1)),
                script_sig=Script(draw(st.binary(max_size=300))),
                witness=Witness(items),
            )
        )
    count = draw(st.sampled_from([1, 2, 252, 253, 300]))
    vout = [
        TransactionOutput(draw(st.integers(0, 2**40)), Script(bytes.fromhex(P2WPKH)))
        for _ in range(count)
    ]
    return Transaction(version=2, vin=vin, vout=vout, locktime=draw(st.integers(0, 2**32 - 1)))


@settings(max_examples=60, deadline=None)
@given(transactions())
def test_agrees_with_embit_on_generated_transactions(tx: Transaction) -> None:
    assert vsize_from_raw_hex(tx.serialize().hex()) == vsize_of(tx)


@pytest.mark.parametrize(
    "raw_hex",
    [
        "",
        "00",
        "zz",
        "0",  # odd length
        legacy_hex()[:-2],  # truncated locktime
        legacy_hex() + "00",  # trailing byte
        segwit_hex()[:-10] + "00000000",  # witness cut short
        "0200000001" + "11" * 32 + "00000000fdffff",  # scriptSig length past the end
        "02000000ff" + "ff" * 8,  # 2**64 - 1 inputs
    ],
)
def test_bytes_that_are_not_one_transaction_raise_value_error(raw_hex: str) -> None:
    with pytest.raises(ValueError):
        vsize_from_raw_hex(raw_hex)


def test_a_huge_declared_count_fails_fast_instead_of_looping() -> None:
    # 2**32 - 1 outputs declared in a 30-byte transaction: the first missing output ends it.
    raw = "0200000001" + "11" * 32 + "0000000000fffffffffeffffffff00"

    with pytest.raises(ValueError, match="truncated"):
        vsize_from_raw_hex(raw)


@pytest.mark.parametrize(
    "txid", ["ab" * 32 + "\n", "ab" * 32 + "\r\n", "\n" + "ab" * 32, "١" * 64, "ab" * 31]
)
def test_normalize_txid_refuses_what_a_lax_regex_would_take(txid: str) -> None:
    with pytest.raises(ValidationError):
        normalize_txid(txid)


def test_normalize_txid_lowercases() -> None:
    assert normalize_txid("AB" * 32) == "ab" * 32
