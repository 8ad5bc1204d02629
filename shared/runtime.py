"""Process-wide caches built from settings, and how to drop them all at once."""

from __future__ import annotations

from shared.db import reset_engine_cache
from shared.dispatch import reset_publisher
from shared.settings import reset_settings_cache


def reset_process_caches() -> None:
    """After PAYOUTS_* changed in this process (demo, bench, tests): forget the settings and
    everything built from them — the DB engine and the Celery publisher."""
    reset_settings_cache()
    reset_engine_cache()
    reset_publisher()
