"""`payouts worker` and `payouts beat`.

Both pass the start-up gate first (shared.health): a service they cannot work without is
unreachable → one line naming the PAYOUTS_* setting and exit 4; the node is on another chain
than PAYOUTS_NETWORK → exit 5. Once running, Celery reconnects to the broker by itself and
the DB pool replaces dead connections, so an outage after start only pauses the work.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from shared.health import start_gate
from shared.settings import get_settings


def run_worker(concurrency: int, queues: str, hostname: str | None) -> int:
    refused = start_gate("worker", get_settings())
    if refused:
        return refused
    from workers.celery_app import app, settings

    argv = ["worker", "-Q", queues, "-c", str(concurrency), "--loglevel", settings.log_level]
    if hostname:
        argv += ["-n", hostname]
    app.worker_main(argv)
    return 0


def run_beat() -> int:
    refused = start_gate("beat", get_settings())
    if refused:
        return refused
    from workers.celery_app import app, settings

    schedule = Path(tempfile.gettempdir()) / "payouts-beat-schedule"
    app.start(["beat", "--loglevel", settings.log_level, "-s", str(schedule)])
    return 0
