"""What every beat job shares: who it acts as, how much one run may do, Redis values."""

from __future__ import annotations

# The actor written into the audit trail for every transition a beat job makes.
ACTOR = "maintenance"
# Per run; the next run picks up the rest. Keeps one run well inside its schedule interval.
BATCH = 500


def as_text(value: bytes | str) -> str:
    """A Redis reply value as text (clients with decode_responses=False give bytes)."""
    return value.decode() if isinstance(value, bytes) else value
