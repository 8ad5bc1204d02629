"""Which API route a request is for, found before the router runs.

The middlewares that must act before FastAPI reads the body (authentication, the per-route
body limit) need to know the route. `create_app` builds one `RouteTable` from the routers it
includes (without a prefix, so each route's own path is the path it is served at) and hands
it to them; they match a request the way the router does (the first route whose path and
method match) and remember the answer in the ASGI scope.
"""

from __future__ import annotations

from collections.abc import Iterable

from fastapi.routing import APIRoute
from starlette.routing import BaseRoute, Match
from starlette.types import Scope

_MATCHED = "payouts.matched_route"


class RouteTable:
    def __init__(self, routes: Iterable[BaseRoute]) -> None:
        self.routes = [route for route in routes if isinstance(route, APIRoute)]

    def match(self, scope: Scope) -> APIRoute | None:
        """The route serving this request; None for anything else (the docs, a 404, a 405
        for a known path with another method)."""
        if scope["type"] != "http":
            return None
        if _MATCHED not in scope:
            scope[_MATCHED] = next(
                (route for route in self.routes if route.matches(scope)[0] is Match.FULL), None
            )
        route: APIRoute | None = scope[_MATCHED]
        return route

    def allowed_methods(self, scope: Scope) -> list[str]:
        """Every method some route serves at this request's path (for a 405's Allow header;
        the router's own names only the first route's, and two routes share /v1/payouts)."""
        methods: set[str] = set()
        for route in self.routes:
            if route.matches(scope)[0] is not Match.NONE:
                methods |= route.methods or set()
        return sorted(methods)
