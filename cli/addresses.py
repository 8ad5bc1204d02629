"""Fresh addresses that the hot wallet does not own: payout destinations for demo and tests."""

from __future__ import annotations

import secrets

from embit import ec, script
from embit.networks import NETWORKS

EMBIT_NETWORK = {"mainnet": "main", "testnet": "test", "signet": "signet", "regtest": "regtest"}


def external_address(network: str = "regtest") -> str:
    """A P2WPKH address of a random key nobody keeps: money sent there is only observed."""
    key = ec.PrivateKey(secrets.token_bytes(32))
    return script.p2wpkh(key.get_public_key()).address(NETWORKS[EMBIT_NETWORK[network]])
