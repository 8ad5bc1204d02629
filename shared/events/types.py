"""The event type names: dotted, `<entity>.<what happened>`. A backend service filters on these
(webhook subscriptions name them), so a name never changes once published."""

from __future__ import annotations

PAYOUT_CREATED = "payout.created"
PAYOUT_APPROVED = "payout.approved"
PAYOUT_CANCELLED = "payout.cancelled"
# A worker or a manual signer took the payout (also a takeover of an expired lease).
PAYOUT_CLAIMED = "payout.claimed"
# A claim given back: a manual signer released it, or a worker could not fund it.
PAYOUT_RELEASED = "payout.released"
PAYOUT_SIGNED = "payout.signed"
PAYOUT_BROADCAST = "payout.broadcast"
PAYOUT_CONFIRMED = "payout.confirmed"
# A reorg took the confirming block away: confirmed -> broadcast.
PAYOUT_REORGED = "payout.reorged"
PAYOUT_FAILED = "payout.failed"
# Its transaction is proven dead: back to approved, to be paid by a new one.
PAYOUT_REQUEUED = "payout.requeued"
# Another version of its transaction pays it now (a fee bump, RBF or CPFP).
PAYOUT_FEE_BUMPED = "payout.fee_bumped"
# It moved to another version that is not a bump of the one it had: the version that
# confirmed, or the older one after a refused bump.
PAYOUT_VERSION_CHANGED = "payout.version_changed"

EVENT_TYPES: tuple[str, ...] = (
    PAYOUT_CREATED,
    PAYOUT_APPROVED,
    PAYOUT_CANCELLED,
    PAYOUT_CLAIMED,
    PAYOUT_RELEASED,
    PAYOUT_SIGNED,
    PAYOUT_BROADCAST,
    PAYOUT_CONFIRMED,
    PAYOUT_REORGED,
    PAYOUT_FAILED,
    PAYOUT_REQUEUED,
    PAYOUT_FEE_BUMPED,
    PAYOUT_VERSION_CHANGED,
)
