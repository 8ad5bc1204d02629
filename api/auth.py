"""Bearer API-key authentication and per-route scopes.

Use `Depends(require_scope("payouts:read"))` (or the ready-made aliases below) in a route;
it returns the calling `Principal` (key name + scopes; `admin` implies every scope). A missing
or unknown/revoked key is 401 with `WWW-Authenticate: Bearer`; a valid key without the scope
is 403 `forbidden`.

FastAPI reads and parses the body before it runs any dependency, so a dependency alone would
answer a bad body (400, 413, 415, 422) before a missing key. `AuthenticationMiddleware` runs
first instead: for every route that declares `require_scope`, it verifies the key from the
headers alone (one database lookup), checks the scope, and leaves the `Principal` in the
request state, where the dependency picks it up. The body is not read for a refused request.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from api.deps import SessionDep
from api.errors import ApiError, database_unavailable, error_response
from api.routing import RouteTable
from shared.infra.db import get_sessionmaker
from shared.intake import api_keys
from shared.intake.api_keys import SCOPES, Principal

__all__ = ["AuthenticationMiddleware", "Principal", "require_scope"]

# auto_error=False: we answer with our own error body instead of FastAPI's default 403. The
# dependency stays declared on every route so OpenAPI documents the bearer scheme.
_bearer = HTTPBearer(
    auto_error=False,
    description="API key from `payouts apikey create`, sent as `Authorization: Bearer pp_…`",
)

CHALLENGE = {"WWW-Authenticate": "Bearer"}
# Where the middleware leaves the verified principal (scope["state"], i.e. request.state).
_PRINCIPAL = "principal"
# require_scope's dependency functions -> the scope each one requires.
_REQUIRED_SCOPES: dict[Callable[..., object], str] = {}


def bearer_secret(authorization: str | None) -> str:
    """The key from an `Authorization: Bearer <key>` header; 401 if there is none."""
    scheme, secret = get_authorization_scheme_param(authorization)
    if not secret or scheme.lower() != "bearer":
        raise ApiError(
            401,
            "unauthorized",
            "missing API key: send the header Authorization: Bearer <key>",
            CHALLENGE,
        )
    return secret


def authenticate(session: Session, authorization: str | None) -> Principal:
    principal = api_keys.verify_api_key(session, bearer_secret(authorization))
    if principal is None:
        raise ApiError(401, "unauthorized", "invalid or revoked API key", CHALLENGE)
    return principal


def _check_scope(principal: Principal, scope: str) -> Principal:
    if not principal.has_scope(scope):
        raise ApiError(403, "forbidden", f"this API key lacks the scope {scope!r}")
    return principal


def required_scope(route: APIRoute) -> str | None:
    """The scope a route's `require_scope` dependency asks for; None for open routes."""
    pending = [route.dependant]
    while pending:
        dependant = pending.pop()
        call = dependant.call
        if call is not None and isinstance(call, Hashable) and call in _REQUIRED_SCOPES:
            return _REQUIRED_SCOPES[call]
        pending.extend(dependant.dependencies)
    return None


def require_scope(scope: str) -> Callable[..., Principal]:
    """A dependency that authenticates the caller and requires `scope`."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")  # a typo in a route, caught at import

    def dependency(
        request: Request,
        session: SessionDep,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        principal = request.scope.get("state", {}).get(_PRINCIPAL)
        if not isinstance(principal, Principal):
            # Only in an app assembled without AuthenticationMiddleware: still never open.
            principal = authenticate(session, request.headers.get("authorization"))
        return _check_scope(principal, scope)

    dependency.__name__ = f"require_scope_{scope.replace(':', '_')}"
    _REQUIRED_SCOPES[dependency] = scope
    return dependency


def _authenticate_in_own_session(authorization: str | None) -> Principal:
    with get_sessionmaker()() as session:
        return authenticate(session, authorization)


class AuthenticationMiddleware:
    """401/403 from the headers alone, before any body is read, for routes with a scope."""

    def __init__(self, app: ASGIApp, routes: RouteTable) -> None:
        self.app = app
        self.routes = routes
        # A route's scope never changes: read each route's dependency tree once, not per request.
        # (Keyed by identity: routes are not hashable.)
        self.scope_of = {id(route): required_scope(route) for route in routes.routes}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self.routes.match(scope)
        needed = self.scope_of.get(id(route)) if route is not None else None
        if needed is None:
            await self.app(scope, receive, send)
            return
        # Exceptions raised here would bypass the app's exception handlers (they sit inside
        # the middleware stack), so the refusals are answered here in the same shape.
        try:
            authorization = Headers(scope=scope).get("authorization")
            principal = await run_in_threadpool(_authenticate_in_own_session, authorization)
            _check_scope(principal, needed)
        except ApiError as exc:
            response = error_response(exc.status, exc.code, exc.message, exc.headers)
        except OperationalError as exc:
            response = database_unavailable(scope["method"], scope["path"], exc)
        else:
            scope.setdefault("state", {})[_PRINCIPAL] = principal
            await self.app(scope, receive, send)
            return
        await response(scope, receive, send)


CanCreate = Annotated[Principal, Depends(require_scope("payouts:create"))]
CanRead = Annotated[Principal, Depends(require_scope("payouts:read"))]
CanApprove = Annotated[Principal, Depends(require_scope("payouts:approve"))]
CanSign = Annotated[Principal, Depends(require_scope("payouts:sign"))]
