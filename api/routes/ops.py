"""Operational endpoints. Only liveness for now; readiness and metrics come separately."""

from __future__ import annotations

from fastapi import APIRouter

from api.schemas import Health

router = APIRouter(tags=["ops"])


@router.get("/healthz", response_model=Health, summary="Liveness: the process answers")
def healthz() -> Health:
    # Deliberately touches nothing else: a slow database must not get the API restarted.
    return Health(status="ok")
