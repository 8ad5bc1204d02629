"""Per-request dependencies: the DB session and the JSON content-type check.

Routes that change state call `session.commit()` themselves, because some work must happen only
after the commit (publishing a Celery message, docs/architecture.md §6). The dependency only closes
the session; anything not committed by then is rolled back.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from api.errors import ApiError
from shared.infra.db import get_sessionmaker


def get_session() -> Iterator[Session]:
    """One SQLAlchemy session per request (FastAPI caches it, so auth and the route share it)."""
    session = get_sessionmaker()()
    try:
        yield session
    finally:
        session.close()  # rolls back whatever the route did not commit


SessionDep = Annotated[Session, Depends(get_session)]


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
