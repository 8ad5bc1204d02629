"""The FastAPI application factory."""

from __future__ import annotations

from fastapi import FastAPI

from api.auth import AuthenticationMiddleware
from api.errors import install_error_handlers
from api.limits import BodySizeLimitMiddleware
from api.routes import manual, ops, payouts, transactions
from api.routing import RouteTable
from shared.infra.settings import get_settings

DESCRIPTION = """
Intake, approval and signing of on-chain Bitcoin payouts, each paid exactly once.

Authenticate with `Authorization: Bearer <key>` (create keys with `payouts apikey create`).
Scopes: `payouts:create`, `payouts:read`, `payouts:approve`, `payouts:sign`; `admin` implies
all. Every error is `{"error": {"code": "...", "message": "..."}}`.
"""


def create_app() -> FastAPI:
    app = FastAPI(
        title="Payout Processor",
        version="1",
        description=DESCRIPTION,
    )
    routers = (ops.router, payouts.router, manual.router, transactions.router)
    for router in routers:
        app.include_router(router)  # no prefix: RouteTable matches each route's own path
    routes = RouteTable(route for router in routers for route in router.routes)
    install_error_handlers(app, routes)
    # Starlette runs the middleware added last first: authentication answers 401/403 from the
    # headers before the body limit (or anything else) looks at the body.
    app.add_middleware(
        BodySizeLimitMiddleware, max_bytes=lambda: get_settings().max_body_bytes, routes=routes
    )
    app.add_middleware(AuthenticationMiddleware, routes=routes)
    return app
