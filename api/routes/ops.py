"""Operational endpoints: liveness, readiness and Prometheus metrics (docs/architecture.md §10).

None of them needs an API key: probes and Prometheus run without one. Keep them on the
internal network (the README says how); they reveal no secrets, only health and totals.
`/metrics` shows the hot-wallet balance, so it can be closed with `PAYOUTS_METRICS_TOKEN`:
then it needs `Authorization: Bearer <that token>`.
"""

from __future__ import annotations

import hmac
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client.exposition import choose_encoder
from pydantic import BaseModel

from api.auth import CHALLENGE
from api.errors import ApiError, error_responses
from api.schemas import Health
from shared.infra.settings import get_settings
from shared.ops import health, metrics

router = APIRouter(tags=["ops"])


class CheckOut(BaseModel):
    status: Literal["ok", "failed", "skipped"]
    setting: str
    detail: str = ""


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    checks: dict[str, CheckOut]


class ErrorOut(BaseModel):
    code: str
    message: str


class NotReady(Readiness):
    """The 503 body: the readiness report plus the usual error object."""

    status: Literal["not_ready"]
    error: ErrorOut


# auto_error=False: a missing token is answered by require_metrics_token in our error shape.
_metrics_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="MetricsToken",
    description="PAYOUTS_METRICS_TOKEN; /metrics needs it only when that setting is set",
)


def require_metrics_token(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_metrics_bearer)],
) -> None:
    """Open when PAYOUTS_METRICS_TOKEN is unset; otherwise the bearer token must equal it."""
    expected = get_settings().metrics_token.get_secret_value()
    if not expected:
        return
    presented = credentials.credentials if credentials is not None else ""
    # Constant-time, so response timing says nothing about how much of a guess was right.
    if not hmac.compare_digest(presented.encode(), expected.encode()):
        raise ApiError(
            401,
            "unauthorized",
            "this /metrics needs the metrics token: send Authorization: Bearer <token>",
            CHALLENGE,
        )


@router.get("/healthz", response_model=Health, summary="Liveness: the process answers")
def healthz() -> Health:
    # Deliberately touches nothing else: a slow database must not get the API restarted.
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Readiness,
    summary="Readiness: database, Redis, broker, node, wallet, and the node's chain",
    responses={
        503: {"model": NotReady, "description": "not ready; `error.message` names what failed"}
    },
)
async def readyz() -> JSONResponse:
    # The checks block on sockets; a worker thread keeps the event loop serving meanwhile.
    results = await run_in_threadpool(health.run_checks, get_settings())
    body = Readiness(
        status="ready" if all(r.ok for r in results) else "not_ready",
        checks={r.name: CheckOut(status=r.status.value, setting=r.setting, detail=r.detail)
                for r in results},
    ).model_dump()  # fmt: skip
    if body["status"] == "ready":
        return JSONResponse(body)
    failed = "; ".join(r.describe() for r in results if r.status == health.Status.FAILED)
    # The usual error shape as well, so clients that only read `error` understand the 503.
    body["error"] = {"code": "not_ready", "message": f"not ready: {failed}"}
    return JSONResponse(body, status_code=503)


@router.get(
    "/metrics",
    summary="Prometheus metrics (text exposition format)",
    description="Open unless `PAYOUTS_METRICS_TOKEN` is set; then it needs "
    "`Authorization: Bearer <token>` (not an API key).",
    # No JSON: the Prometheus text format, or OpenMetrics when the Accept header asks for it.
    response_class=Response,
    responses={
        200: {
            "description": "Prometheus exposition format",
            "content": {"text/plain": {}, "application/openmetrics-text": {}},
        },
        401: {
            **error_responses(401)[401],
            "description": "PAYOUTS_METRICS_TOKEN is set and the request lacks it (`unauthorized`)",
        },
    },
    # With the dependency's MetricsToken requirement: the token is optional ({} = none),
    # since whether it is needed depends on the deployment's settings.
    openapi_extra={"security": [{}]},
)
def prometheus_metrics(
    request: Request, _: Annotated[None, Depends(require_metrics_token)]
) -> Response:
    # Prometheus asks for OpenMetrics in its Accept header; curl gets the plain text format.
    encode, content_type = choose_encoder(request.headers.get("accept", ""))
    return Response(encode(metrics.registry()), media_type=content_type)
