"""`payouts api`: serve the app with uvicorn."""

from __future__ import annotations

import uvicorn

from api.app import create_app
from shared.infra.log_setup import configure_logging
from shared.infra.settings import get_settings
from shared.ops.health import start_gate


def serve(host: str | None = None, port: int | None = None) -> int:
    """Run until interrupted. Returns 0 after a clean shutdown, non-zero if the server never
    started: the port is taken, the database is unreachable, or the node is on another chain
    than PAYOUTS_NETWORK (see shared.ops.health for the codes)."""
    settings = get_settings()
    # One log format for the whole process (JSON lines unless PAYOUTS_LOG_JSON=false):
    # log_config=None stops uvicorn installing its own handlers, so its loggers propagate here.
    configure_logging(settings.log_level, settings.log_json)
    # Exit codes: shared.ops.health.EXIT_SERVICE_UNREACHABLE (4), EXIT_WRONG_NETWORK (5).
    refused = start_gate("api", settings)
    if refused:
        return refused
    config = uvicorn.Config(
        create_app(),
        host=host or settings.api_host,
        port=port if port is not None else settings.api_port,
        log_config=None,
        log_level=settings.log_level.lower(),
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
