"""Giving coins back to the wallet when a transaction that locked them will never be sent."""

from __future__ import annotations

import logging

from shared.node.client import NodeClient
from shared.node.errors import NodeError

log = logging.getLogger(__name__)


def unlock_quietly(node: NodeClient, outpoints: list[str]) -> None:
    """Unlock `outpoints`, never raising: a node that is down or restarted has forgotten its
    locks anyway, and the orphaned-lock job frees whatever is left."""
    if not outpoints:
        return
    try:
        node.unlock_unspent(outpoints)
    except NodeError as exc:
        log.warning("could not unlock %d inputs: %s", len(outpoints), exc)
