"""Pure functions of the devnode: consensus constants, decoding rules, amounts."""

from __future__ import annotations

from decimal import Decimal

import pytest
from embit.script import Script
from embit.transaction import Transaction, TransactionInput, TransactionOutput

from devnode.chain import GENESIS_HASH, block_subsidy, genesis_block
from devnode.errors import RPCError
from devnode.policy import format_fee_rate, format_money
from devnode.registry import encode
from devnode.scriptcode import dust_threshold, script_for_address, script_num
from devnode.txutil import amount_to_sats, btc, fee_for, fee_rate_to_sat_per_kvb, parse_tx, vsize_of

P2WPKH = bytes.fromhex("0014751e76e8199196d454941c45d1b3a323f1433bd6")


def test_genesis_is_bitcoin_cores_regtest_genesis() -> None:
    block = genesis_block()
    assert block.hash == GENESIS_HASH
    assert block.merkle_root == "4a5e1e4baab89f3a32518a88c31bc87f618f76673e2cc77ab2127b7afdeda33b"


def test_regtest_subsidy_halves_every_150_blocks() -> None:
    assert block_subsidy(1) == 50 * 100_000_000
    assert block_subsidy(149) == 50 * 100_000_000
    assert block_subsidy(150) == 25 * 100_000_000
    assert block_subsidy(150 * 64) == 0


def test_zero_input_transaction_is_not_read_as_segwit() -> None:
    tx = Transaction(version=2, vin=[], vout=[TransactionOutput(5000, Script(P2WPKH))])
    raw = tx.serialize()
    assert raw[4:6] == b"\x00\x01"  # looks exactly like a segwit marker and flag
    decoded = parse_tx(raw)
    assert decoded.vin == [] and decoded.vout[0].value == 5000


def test_segwit_transaction_round_trips() -> None:
    inp = TransactionInput(b"\x11" * 32, 1)
    inp.witness.items = [b"\x30" * 71, b"\x02" * 33]
    tx = Transaction(version=2, vin=[inp], vout=[TransactionOutput(5000, Script(P2WPKH))])
    assert parse_tx(tx.serialize()).serialize() == tx.serialize()
    assert vsize_of(tx) == 110  # 1 P2WPKH input, 1 P2WPKH output


def test_amounts() -> None:
    assert amount_to_sats(Decimal("0.00000001")) == 1
    assert amount_to_sats("21000000") == 21_000_000 * 100_000_000
    assert amount_to_sats(1e-05) == 1000
    for bad in (Decimal("0.000000001"), "-1", True, "abc", 21_000_001):
        with pytest.raises(RPCError) as caught:
            amount_to_sats(bad)
        assert caught.value.code == -3
    assert str(btc(0)) == "0E-8" and encode(btc(0)) == "0.00000000"
    assert encode({"a": [btc(150_000_000), None, True]}) == '{"a":[1.50000000,null,true]}'


def test_fee_rates() -> None:
    assert fee_rate_to_sat_per_kvb(Decimal("1.234"), unit="sat/vB") == 1234
    assert fee_rate_to_sat_per_kvb(Decimal("0.0002"), unit="BTC/kvB") == 20_000
    with pytest.raises(RPCError):
        fee_rate_to_sat_per_kvb(Decimal("1.2345"), unit="sat/vB")
    assert fee_for(1000, 141) == 141
    assert fee_for(1500, 141) == 212  # rounded up, never below the rate
    assert format_money(100_000_000) == "1.00" and format_money(1234) == "0.00001234"
    assert format_fee_rate(1000) == "0.00001000 BTC/kvB"


def test_regtest_addresses_only() -> None:
    assert script_for_address("bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080") == P2WPKH
    for other in ("bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4",
                  "1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2", "", "bcrt1qqqqq"):
        with pytest.raises(ValueError):
            script_for_address(other)


def test_dust_and_bip34_heights() -> None:
    assert dust_threshold(P2WPKH) == 294
    assert dust_threshold(bytes.fromhex("76a914" + "00" * 20 + "88ac")) == 546
    assert script_num(0) == b"\x00" and script_num(16) == b"\x60"
    assert script_num(128) == b"\x02\x80\x00"  # sign bit needs a padding byte


def test_segwit_addresses_encode_like_embit() -> None:
    from embit import bech32

    from devnode.scriptcode import address_of

    program = bytes(range(32))
    assert address_of(P2WPKH) == bech32.encode("bcrt", 0, P2WPKH[2:])
    assert address_of(b"\x00\x20" + program) == bech32.encode("bcrt", 0, program)
    assert address_of(b"\x51\x20" + program) == bech32.encode("bcrt", 1, program)  # bech32m
