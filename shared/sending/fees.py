"""Fee-rate choice for a new transaction."""

from __future__ import annotations

from shared.infra.settings import Settings
from shared.node import NodeClient


def choose_fee_rate_sat_vb(node: NodeClient, settings: Settings) -> int:
    """The node's estimate for FEE_CONF_TARGET, capped at MAX_FEE_RATE_SAT_VB.

    estimatesmartfee has no fallback of its own (a fresh regtest chain never has data), so
    FALLBACK_FEE_RATE_SAT_VB stands in. Capping rather than refusing: an underpaying
    transaction can still be bumped later, a stuck queue helps nobody.
    """
    estimate = node.estimate_fee_rate_sat_vb(settings.fee_conf_target)
    rate = estimate if estimate is not None else settings.fallback_fee_rate_sat_vb
    return max(1, min(rate, settings.max_fee_rate_sat_vb))
