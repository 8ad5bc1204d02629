"""The FastAPI application factory."""

from __future__ import annotations

from fastapi import FastAPI

from api.errors import install_error_handlers
from api.limits import BodySizeLimitMiddleware
from api.routes import manual, ops, payouts
from shared.settings import get_settings

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
    install_error_handlers(app)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=lambda: get_settings().max_body_bytes)
    app.include_router(ops.router)
    app.include_router(payouts.router)
    app.include_router(manual.router)
    return app
