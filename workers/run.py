"""`payouts worker` and `payouts beat`.

Both pass the start-up gate first (shared.ops.health): a service they cannot work without is
unreachable → one line naming the PAYOUTS_* setting and exit 4; the node is on another chain
than PAYOUTS_NETWORK → exit 5. Once running, Celery reconnects to the broker by itself and
the DB pool replaces dead connections, so an outage after start only pauses the work.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from shared.infra.log_setup import configure_logging
from shared.infra.settings import get_settings
from shared.ops.health import start_gate


def _json_logs_from_the_start() -> None:
    # Before Celery configures logging (its setup_logging signal does the same later), so the
    # gate's warnings and Celery's early warnings (e.g. "running as root") are JSON lines too.
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_json)
    logging.captureWarnings(True)


def run_worker(concurrency: int, queues: str, hostname: str | None) -> int:
    _json_logs_from_the_start()
    refused = start_gate("worker", get_settings())
    if refused:
        return refused
    from workers.celery_app import app, settings

    # --quiet drops Celery's plain-text banner: every line the process writes is JSON.
    argv = ["--quiet", "worker", "-Q", queues, "-c", str(concurrency)]
    argv += ["--loglevel", settings.log_level]
    if hostname:
        argv += ["-n", hostname]
    app.worker_main(argv)
    return 0


def run_beat() -> int:
    _json_logs_from_the_start()
    refused = start_gate("beat", get_settings())
    if refused:
        return refused
    from workers.celery_app import app, settings

    # Beat's file only remembers when each job last ran. Ours run every few seconds and are
    # idempotent, so a fresh file per start loses nothing, and two beats on one host (tests,
    # the demo) never fight over one file.
    schedule = Path(tempfile.mkdtemp(prefix="payouts-beat-")) / "schedule"
    app.start(["--quiet", "beat", "--loglevel", settings.log_level, "-s", str(schedule)])
    return 0
