"""Operational endpoints: liveness, readiness and Prometheus metrics (DESIGN §10).

None of them needs an API key: probes and Prometheus run without one. Keep them on the
internal network (the README says how); they reveal no secrets, only health and totals.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from prometheus_client.exposition import choose_encoder
from pydantic import BaseModel

from api.schemas import Health
from shared import health, metrics
from shared.settings import get_settings

router = APIRouter(tags=["ops"])


class CheckOut(BaseModel):
    status: Literal["ok", "failed", "skipped"]
    setting: str
    detail: str = ""


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    checks: dict[str, CheckOut]


@router.get("/healthz", response_model=Health, summary="Liveness: the process answers")
def healthz() -> Health:
    # Deliberately touches nothing else: a slow database must not get the API restarted.
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Readiness,
    summary="Readiness: database, Redis, broker, node, wallet, and the node's chain",
    responses={503: {"description": "not ready; `error.message` names what failed"}},
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


@router.get("/metrics", summary="Prometheus metrics (text exposition format)")
def prometheus_metrics(request: Request) -> Response:
    # Prometheus asks for OpenMetrics in its Accept header; curl gets the plain text format.
    encode, content_type = choose_encoder(request.headers.get("accept", ""))
    return Response(encode(metrics.registry()), media_type=content_type)
