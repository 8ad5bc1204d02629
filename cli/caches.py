"""Process-wide caches built from settings, and how to drop them all at once."""

from __future__ import annotations

from shared.infra.db import reset_engine_cache
from shared.infra.settings import reset_settings_cache
from shared.sending.dispatch import reset_publisher


def reset_process_caches() -> None:
    """After PAYOUTS_* changed in this process (demo, bench, tests): forget the settings and
    everything built from them — the DB engine and the Celery publisher."""
    reset_settings_cache()
    reset_engine_cache()
    reset_publisher()
