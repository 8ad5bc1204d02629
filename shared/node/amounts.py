"""Satoshis inside the project, Decimal BTC only at the RPC boundary (docs/architecture.md §8)."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

SATS_PER_BTC = 100_000_000
_ONE_SAT = Decimal("0.00000001")


def sats_to_btc(sats: int) -> Decimal:
    """Exact BTC amount for the wire (python-bitcoinrpc sends Decimal as a JSON number)."""
    if isinstance(sats, bool) or not isinstance(sats, int):
        raise TypeError(f"satoshi amounts are ints, got {type(sats).__name__}")
    return (Decimal(sats) / SATS_PER_BTC).quantize(_ONE_SAT)


def btc_to_sats(value: Any) -> int:
    """A BTC amount from a reply (Decimal; str/int tolerated) as integer satoshis.

    Refuses floats (they may already have lost precision) and sub-satoshi amounts.
    """
    if isinstance(value, (bool, float)):
        raise TypeError("BTC amounts must be Decimal, str or int, never float")
    amount = Decimal(value) * SATS_PER_BTC
    if amount != amount.to_integral_value():
        raise ValueError(f"{value} BTC is not a whole number of satoshis")
    return int(amount)


def sat_vb_to_btc_kvb(sat_per_vb: int) -> Decimal:
    """sat/vB (our unit) -> BTC/kvB (bitcoind's feeRate / maxfeerate unit)."""
    return (Decimal(sat_per_vb) * 1000 / SATS_PER_BTC).quantize(_ONE_SAT)


def btc_kvb_to_sat_vb_ceil(value: Any) -> int:
    """BTC/kvB (estimatesmartfee) -> whole sat/vB, rounded up so we never underpay."""
    per_kvb = Decimal(value) * SATS_PER_BTC
    return max(1, math.ceil(per_kvb / 1000))
