"""The signed size coin selection keeps incrementally, against the serialized dummy-signed
transaction, and Core's size constants (CalculateMaximumSignedInputSize, tx_noinputs_size)."""

from __future__ import annotations

import random

import pytest
from embit.script import Script
from embit.transaction import Transaction, TransactionInput, TransactionOutput

from devnode.scripts import p2pkh_script, p2sh_script, p2wpkh_script
from devnode.spend import TxSize, _dummy_input, input_size, noinputs_size, signed_vsize
from devnode.txutil import vsize_of, weight_of

P2WPKH = p2wpkh_script(b"\x02" + b"\x11" * 32)
SCRIPTS = {
    "p2wpkh": P2WPKH,
    "p2sh-p2wpkh": p2sh_script(P2WPKH),
    "p2pkh": p2pkh_script(b"\x02" + b"\x22" * 32),
}


@pytest.mark.parametrize("seed", range(20))
def test_incremental_size_matches_the_serialized_dummy_signed_transaction(seed: int) -> None:
    rng = random.Random(seed)
    kinds = list(SCRIPTS.values())
    scripts = [rng.choice(kinds) for _ in range(rng.choice([1, 2, 3, 40, 260]))]
    vin = [TransactionInput(rng.randbytes(32), rng.randrange(4)) for _ in scripts]
    vout = [TransactionOutput(rng.randrange(1, 10**8), Script(rng.choice(kinds)))
            for _ in range(rng.choice([1, 2, 252, 253, 300]))]
    dummy = Transaction(version=2, vin=[_dummy_input(i, s) for i, s in zip(vin, scripts,
                                                                          strict=True)],
                        vout=vout, locktime=0)
    size = TxSize()
    for script in scripts:
        size.add_input(input_size(script))
    for out in vout:
        size.add_output(out)
    assert size.weight == weight_of(dummy)
    assert size.vsize == vsize_of(dummy) == signed_vsize(vin, scripts, vout, 2, 0)


def test_core_input_and_output_sizes() -> None:
    # CalculateMaximumSignedInputSize with low-R grinding: P2WPKH 68 vB (271 WU), P2PKH 148 vB.
    assert input_size(SCRIPTS["p2wpkh"]).weight == 271
    assert input_size(SCRIPTS["p2wpkh"]).vsize == 68
    assert input_size(SCRIPTS["p2sh-p2wpkh"]).vsize == 91
    assert input_size(SCRIPTS["p2pkh"]).vsize == 148
    # tx_noinputs_size: 10 bytes, the output count, 31 bytes per P2WPKH output.
    outs = [TransactionOutput(1, Script(P2WPKH))] * 3300
    assert noinputs_size(outs) == 10 + 3 + 31 * 3300
