"""`payouts api`: serve the app with uvicorn."""

from __future__ import annotations

import logging

import uvicorn

from api.app import create_app
from shared.settings import get_settings


def serve(host: str | None = None, port: int | None = None) -> int:
    """Run until interrupted. Returns 0 after a clean shutdown, 1 if the server never started
    (e.g. the port is taken)."""
    settings = get_settings()
    level = settings.log_level.upper()
    # uvicorn configures only its own loggers; this gives ours (e.g. publish warnings) a home.
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = uvicorn.Config(
        create_app(),
        host=host or settings.api_host,
        port=port if port is not None else settings.api_port,
        log_level=level.lower(),
        # The access log shows client, request line and status, never request headers, so
        # the Authorization header (the API key) stays out of the logs.
        access_log=True,
        server_header=False,
    )
    server = uvicorn.Server(config)
    try:
        server.run()
    except SystemExit as exc:  # uvicorn exits this way when it cannot bind
        return int(exc.code) if isinstance(exc.code, int) else 1
    return 0 if server.started else 1
