"""Bearer API-key authentication and per-route scopes.

Use `Depends(require_scope("payouts:read"))` (or the ready-made aliases below) in a route;
it returns the calling `Principal` (key name + scopes; `admin` implies every scope). A missing
or unknown/revoked key is 401 with `WWW-Authenticate: Bearer`; a valid key without the scope
is 403 `forbidden`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.deps import SessionDep
from api.errors import ApiError
from shared.api_keys import SCOPES, Principal, verify_api_key

__all__ = ["Principal", "require_scope"]

# auto_error=False: we answer with our own error body instead of FastAPI's default 403.
_bearer = HTTPBearer(
    auto_error=False,
    description="API key from `payouts apikey create`, sent as `Authorization: Bearer pp_…`",
)

_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def require_scope(scope: str) -> Callable[..., Principal]:
    """A dependency that authenticates the caller and requires `scope`."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")  # a typo in a route, caught at import

    def dependency(
        session: SessionDep,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        if credentials is None:
            raise ApiError(
                401,
                "unauthorized",
                "missing API key: send the header Authorization: Bearer <key>",
                _CHALLENGE,
            )
        principal = verify_api_key(session, credentials.credentials)
        if principal is None:
            raise ApiError(401, "unauthorized", "invalid or revoked API key", _CHALLENGE)
        if not principal.has_scope(scope):
            raise ApiError(403, "forbidden", f"this API key lacks the scope {scope!r}")
        return principal

    dependency.__name__ = f"require_scope_{scope.replace(':', '_')}"
    return dependency


CanCreate = Annotated[Principal, Depends(require_scope("payouts:create"))]
CanRead = Annotated[Principal, Depends(require_scope("payouts:read"))]
CanApprove = Annotated[Principal, Depends(require_scope("payouts:approve"))]
CanSign = Annotated[Principal, Depends(require_scope("payouts:sign"))]
