"""`payouts worker` and `payouts beat`."""

from __future__ import annotations

import tempfile
from pathlib import Path


def run_worker(concurrency: int, queues: str, hostname: str | None) -> int:
    from workers.celery_app import app, settings

    argv = ["worker", "-Q", queues, "-c", str(concurrency), "--loglevel", settings.log_level]
    if hostname:
        argv += ["-n", hostname]
    app.worker_main(argv)
    return 0


def run_beat() -> int:
    from workers.celery_app import app, settings

    schedule = Path(tempfile.gettempdir()) / "payouts-beat-schedule"
    app.start(["beat", "--loglevel", settings.log_level, "-s", str(schedule)])
    return 0
