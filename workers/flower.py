"""`payouts flower`: Flower (Celery monitoring) for the workers' broker, behind basic auth.

The credentials come from PAYOUTS_FLOWER_USER / PAYOUTS_FLOWER_PASSWORD and are handed to
Flower inside this process, never on a command line (which `ps` shows to every local user).
Flower refuses to start without a password unless `--no-auth` is given, for local use only.
Flower options not listed here (e.g. `--read_only=true`, `--persistent=true`) pass through.
"""

from __future__ import annotations

import argparse
import sys

from shared.infra.log_setup import configure_logging
from shared.infra.settings import get_settings
from shared.ops.health import start_gate

# Same meaning as argparse's own exit code: the command line or settings are unusable.
EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="payouts flower",
        description="Flower for the payout workers (basic auth from PAYOUTS_FLOWER_USER and "
        "PAYOUTS_FLOWER_PASSWORD). Other Flower options are passed through.",
    )
    parser.add_argument("--address", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=5555, help="port (default 5555)")
    parser.add_argument(
        "--no-auth",
        action="store_true",
        help="serve without authentication (local use only; Flower's HTTP API stays closed)",
    )
    return parser


def basic_auth(no_auth: bool) -> list[str]:
    """Flower's `basic_auth` option value; empty means no auth. Raises ValueError when a
    password is required but missing."""
    if no_auth:
        return []
    settings = get_settings()
    password = settings.flower_password.get_secret_value()
    if not password:
        raise ValueError(
            "PAYOUTS_FLOWER_PASSWORD is empty; set it (and PAYOUTS_FLOWER_USER), or pass "
            "--no-auth for local use"
        )
    return [f"{settings.flower_user}:{password}"]


def main(argv: list[str]) -> int:
    args, passthrough = _parser().parse_known_args(argv)
    try:
        credentials = basic_auth(args.no_auth)
    except ValueError as exc:
        print(f"payouts flower: refusing to start: {exc}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    settings = get_settings()
    # Our JSON lines for Flower's own logs too: tornado adds its handler only to a bare root.
    configure_logging(settings.log_level, settings.log_json)
    refused = start_gate("flower", settings)
    if refused:
        return refused

    import flower.options  # noqa: F401 - defines Flower's tornado options before we set one
    from tornado.options import options

    # Set directly rather than as `--basic-auth=user:pass`: Flower splits that flag on commas
    # (a password may contain one), and a flag would be visible in the process list.
    options.basic_auth = credentials

    from workers.celery_app import app

    app.start(["flower", f"--address={args.address}", f"--port={args.port}", *passthrough])
    return 0
