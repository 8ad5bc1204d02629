"""Per-request dependencies: the DB session, its unit of work, and the JSON content-type check.

A request has one session for the route (the authentication middleware looks the key up in a
session of its own; the dependency fallback in `api.auth` uses this one) and one `UnitOfWork` on it
(`shared.infra.unit_of_work`). Routes that change state pass the unit of work to the domain and
call `uow.commit()` at the end; after-commit hooks the domain registered (publishing a Celery
message, docs/architecture.md §6) run then. Anything not committed when the request ends is rolled
back and its hooks dropped.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from api.errors import ApiError
from shared.infra.db import get_sessionmaker
from shared.infra.unit_of_work import UnitOfWork


def get_session() -> Iterator[Session]:
    """One SQLAlchemy session per request (FastAPI caches it: the route and its unit of work
    share it)."""
    session = get_sessionmaker()()
    try:
        yield session
    finally:
        session.close()  # rolls back whatever the route did not commit


SessionDep = Annotated[Session, Depends(get_session)]


def get_unit_of_work(session: SessionDep) -> Iterator[UnitOfWork]:
    """The request's unit of work, on the request's session."""
    uow = UnitOfWork(session)
    try:
        yield uow
    finally:
        uow.close()


UnitOfWorkDep = Annotated[UnitOfWork, Depends(get_unit_of_work)]


async def require_json_body(request: Request) -> None:
    """415 for a non-empty body that is not declared JSON (e.g. curl -d's form encoding),
    instead of a confusing "input should be an object" from the validator."""
    body = await request.body()  # cached by Starlette; the body was already read for parsing
    if not body:
        return
    content_type = request.headers.get("content-type", "")
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise ApiError(
            415,
            "unsupported_media_type",
            "send the request body as JSON with the header Content-Type: application/json",
        )
