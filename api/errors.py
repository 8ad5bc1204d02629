"""One error shape for every failure: `{"error": {"code": "...", "message": "..."}}`.

Domain code raises `shared.core.errors.DomainError(code, message, kind)` and knows nothing of
HTTP; `KIND_STATUS` below is the one place a kind becomes a status, and one handler answers every
`DomainError` (routes do no translation of their own). `ApiError` is for refusals that exist only
at the HTTP layer (authentication, content type, headers). The handlers installed here also turn
FastAPI's validation errors and Starlette's 404/405 into that shape, so clients never see
FastAPI's default `{"detail": ...}` nor an HTML page.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.routing import RouteTable
from shared.core.errors import DomainError, ErrorKind

log = logging.getLogger(__name__)

# Default codes for HTTP errors Starlette/FastAPI raise themselves.
_STATUS_CODES: Mapping[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "body_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    503: "service_unavailable",
}

# The one mapping from a domain error's kind to the HTTP status it is answered with.
KIND_STATUS: Mapping[ErrorKind, int] = {
    ErrorKind.NOT_FOUND: 404,
    ErrorKind.CONFLICT: 409,
    ErrorKind.INVALID: 422,
    ErrorKind.FORBIDDEN: 403,
    ErrorKind.NODE_REFUSED: 502,
    ErrorKind.UNAVAILABLE: 503,
}

# Documented in OpenAPI for every route: the body every error response carries.
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
        }
    },
}


class ApiError(Exception):
    """Raise from a route or dependency to answer `status` with the standard error body."""

    def __init__(
        self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=status, headers=headers
    )


# What each documented error status means here (the `error.code` values in backticks).
_DESCRIPTIONS: Mapping[int, str] = {
    400: "Malformed request: the body is not valid JSON (`malformed_json`) or a required header "
    "is missing (`idempotency_key_required`)",
    401: "Missing, unknown or revoked API key (`unauthorized`)",
    403: "The API key lacks the scope (`forbidden`) or four-eyes approval refuses it",
    404: "No such payout or transaction (`not_found`)",
    409: "The payout is not in a state that allows this (`invalid_state`, …)",
    413: "The request body exceeds the route's size limit (`body_too_large`)",
    415: "The request body is not declared JSON (`unsupported_media_type`)",
    422: "Invalid input (`invalid_request`, …)",
    502: "The node refused the request (`node_error`, …)",
    503: "A service it needs (database, node) is unavailable; retry later",
}
# Every route that takes a body can answer these before it looks at what the body says.
BODY_ERRORS = (400, 413, 415)


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries for the given error statuses, all with ERROR_SCHEMA."""
    return {
        s: {
            "description": _DESCRIPTIONS.get(s, _STATUS_CODES.get(s, "error")),
            "content": {"application/json": {"schema": ERROR_SCHEMA}},
        }
        for s in statuses
    }


def database_unavailable(method: str, path: str, exc: OperationalError) -> JSONResponse:
    """503 for a database error. Connection loss, failover, serialization failures: transient,
    and every write is safe to retry (creates are idempotent, transitions compare-and-set)."""
    log.warning(
        "database error on %s %s: %s",
        method,
        path,
        str(exc.orig).splitlines()[0] if exc.orig else type(exc).__name__,
    )
    return error_response(
        503,
        "service_unavailable",
        "the database is unavailable; retry the request later",
        {"Retry-After": "5"},
    )


def domain_error_response(exc: DomainError) -> JSONResponse:
    return error_response(KIND_STATUS[exc.kind], exc.code, exc.message)


IDEMPOTENCY_KEY_HEADER = "Idempotency-Key"


def _is_missing_header(err: Mapping[str, Any], name: str) -> bool:
    loc = tuple(err.get("loc", ()))
    return err.get("type") == "missing" and loc == ("header", name)


def _describe_validation_errors(errors: Sequence[Any]) -> str:
    parts = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path", "header")]
        field = ".".join(loc)
        if err.get("type") == "missing" and not field:
            parts.append("a JSON object request body is required")
            continue
        if err.get("type") == "extra_forbidden":
            parts.append(f"{field}: unknown field")
            continue
        msg = str(err.get("msg", "invalid value"))
        parts.append(f"{field}: {msg}" if field else msg)
    return "; ".join(parts) or "invalid request"


def install_error_handlers(app: FastAPI, routes: RouteTable | None = None) -> None:
    """`routes`: the app's API routes, to list every allowed method in a 405's Allow."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(DomainError)
    async def _domain_error(_: Request, exc: DomainError) -> JSONResponse:
        return domain_error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _request_validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        for err in errors:
            if err.get("type") == "json_invalid":
                detail = err.get("ctx", {}).get("error", "")
                return error_response(
                    400, "malformed_json", f"request body is not valid JSON: {detail}".rstrip(": ")
                )
        if len(errors) == 1 and _is_missing_header(errors[0], IDEMPOTENCY_KEY_HEADER):
            # Required in OpenAPI; a request without it gets the 400 it always got.
            return error_response(
                400, "idempotency_key_required", "the Idempotency-Key header is required"
            )
        return error_response(422, "invalid_request", _describe_validation_errors(errors))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, "error")
        message = exc.detail if isinstance(exc.detail, str) else code
        if exc.status_code == 404 and message == "Not Found":
            message = "no such resource"
        headers = dict(exc.headers or {})
        if exc.status_code == 405 and routes is not None:
            allowed = routes.allowed_methods(request.scope)
            if allowed:
                headers["Allow"] = ", ".join(allowed)
                message = f"{request.method} is not allowed here; use {' or '.join(allowed)}"
        return error_response(exc.status_code, code, message, headers)

    @app.exception_handler(OperationalError)
    async def _database_unavailable(request: Request, exc: OperationalError) -> JSONResponse:
        return database_unavailable(request.method, request.url.path, exc)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # The traceback goes to the log; the client gets no internals. Headers are not
        # logged: they carry the API key.
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", "internal server error")
