"""Request body size limits, enforced before any route reads the body.

A pure ASGI middleware rather than a FastAPI dependency: by the time a dependency runs,
FastAPI has already read and parsed the whole body. Both a declared Content-Length and the
bytes actually streamed (chunked uploads have no Content-Length) are checked.

Every route gets `PAYOUTS_MAX_BODY_BYTES` (small: payout requests are small), except a route
that declares its own limit with `openapi_extra=body_limit(n)`, which also shows the limit in
the OpenAPI document. Size such a limit from the route's schema with `json_body_limit`, so it
always fits what the schema allows (manual/submit: signed transactions of up to 200,000
characters).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from annotated_types import MaxLen
from pydantic import BaseModel
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import error_response
from api.routing import RouteTable

# The OpenAPI extension carrying a route's own limit, in bytes.
BODY_LIMIT_EXTENSION = "x-max-body-bytes"
# Room for whitespace and pretty-printing around the fields of a JSON body.
JSON_OVERHEAD_BYTES = 1024


def body_limit(max_bytes: int) -> dict[str, Any]:
    """`openapi_extra=` for a route whose body limit is not the setting."""
    return {BODY_LIMIT_EXTENSION: max_bytes}


def json_body_limit(model: type[BaseModel]) -> int:
    """The size of the largest JSON body `model` accepts, plus JSON_OVERHEAD_BYTES.

    Every field must be a string with a `max_length`. Counted one byte per character: the
    fields this is for hold hex or base64, which is ASCII; other text may be refused as too
    large before the schema would have refused it anyway.
    """
    widest: dict[str, str] = {}
    for name, field in model.model_fields.items():
        lengths = [m.max_length for m in field.metadata if isinstance(m, MaxLen)]
        if not lengths:
            raise TypeError(f"{model.__name__}.{name} has no max_length: its body is unbounded")
        widest[field.alias or name] = "x" * min(lengths)
    return len(json.dumps(widest, separators=(",", ":"))) + JSON_OVERHEAD_BYTES


class BodySizeLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: Callable[[], int], routes: RouteTable) -> None:
        self.app = app
        # A callable so the limit follows settings read at request time.
        self.max_bytes = max_bytes
        self.routes = routes

    def limit_for(self, scope: Scope) -> int:
        route = self.routes.match(scope)
        own = (route.openapi_extra or {}).get(BODY_LIMIT_EXTENSION) if route else None
        return int(own) if own is not None else self.max_bytes()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope)
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await self._refuse(limit, scope, receive, send)
            return

        # Buffer the body (at most `limit` bytes) and replay it downstream.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away mid-body: there is no one to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await self._refuse(limit, scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break

        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    @staticmethod
    async def _refuse(limit: int, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(
            413, "body_too_large", f"request body exceeds the limit of {limit} bytes"
        )
        await response(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server rejects malformed lengths before we see them
    return None
