"""The simulated node, in-process, for the sending tests (a module may override `node`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cli.regtest_node import RegtestNode
from devnode.server import RunningDevnode, start_devnode


@pytest.fixture
def devnode() -> Iterator[RunningDevnode]:
    with start_devnode(host="127.0.0.1", port=0) as running:
        yield running


@pytest.fixture
def node(devnode: RunningDevnode) -> RegtestNode:
    """A client of the devnode's hot wallet after 101 blocks: one spendable coin."""
    client = RegtestNode(devnode.wallet_url)
    client.generate_to_address(101, client.get_new_address())
    return client
