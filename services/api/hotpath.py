"""`GET /v1/brands/{brand}/kpis` served ahead of the framework: the dashboards' hot route, answered from the
views' cached JSON without FastAPI's routing, dependency solving and response machinery.

The route stays declared in FastAPI (OpenAPI, and every request this path does not take), and the answers
are the framework's: the same key check (`AccessGuard.check`: 401, 429 with Retry-After), the same 404 for a
brand the key may not see, the same error bodies (FastAPI's own HTTPException handler) and the same headers.
Only requests whose answer needs nothing more go this way: GET, no root path, a valid `window` (or none).
The others (a bad window's 422, HEAD's 405, a trailing slash's redirect…) fall through untouched, before
anything is counted or charged to the key.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from urllib.parse import parse_qsl

from fastapi import HTTPException
from fastapi.exception_handlers import http_exception_handler
from starlette.requests import Request
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from services.api.auth import AccessGuard, bearer_token, brand_not_found
from services.api.views import ROLLING_WINDOWS, Views

PREFIX = "/v1/brands/"
SUFFIX = "/kpis"
DEFAULT_WINDOW = "1h"
_WINDOWS = frozenset(ROLLING_WINDOWS)
_JSON = b"application/json"


def kpis_brand(path: str) -> str | None:
    """The brand of a `/v1/brands/{brand}/kpis` path (as the route's `[^/]+` matches it), else None."""
    if not (path.startswith(PREFIX) and path.endswith(SUFFIX)):
        return None
    brand = path[len(PREFIX) : -len(SUFFIX)]
    return brand if brand and "/" not in brand else None


def kpis_window(query_string: bytes) -> str | None:
    """The `window` query parameter as FastAPI reads it (the last one wins; absent: 1h); None if invalid."""
    if not query_string:
        return DEFAULT_WINDOW
    window = DEFAULT_WINDOW
    for name, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        if name == "window":
            window = value
    return window if window in _WINDOWS else None


def authorization(scope: Scope) -> str | None:
    """The first Authorization header, decoded as Starlette's `Headers.get` does."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            decoded: str = value.decode("latin-1")
            return decoded
    return None


class KpisHotPath:
    """Pure ASGI middleware answering the KPI route itself; every other request goes to `app`.

    `route` is the FastAPI route it stands in for: it is put in the scope, as the router would, so the
    latency histogram outside labels these answers with the same route template."""

    def __init__(
        self,
        app: ASGIApp,
        views: Views,
        access: AccessGuard,
        clock: Callable[[], datetime],
        route: BaseRoute,
    ) -> None:
        self.app = app
        self.views = views
        self.access = access
        self.clock = clock
        self.route = route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET" or scope.get("root_path"):
            await self.app(scope, receive, send)
            return
        brand = kpis_brand(scope["path"])
        window = kpis_window(scope["query_string"]) if brand is not None else None
        if brand is None or window is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = self.route
        try:
            # The order of the framework's route: the key (its dependency) first, then the brand.
            principal = self.access.check(bearer_token(authorization(scope)))
            if not principal.can_see(brand) or not self.views.has_brand(brand):
                raise brand_not_found(brand)
        except HTTPException as refused:
            response = await http_exception_handler(Request(scope, receive), refused)
            await response(scope, receive, send)
            return
        body = self.views.kpis_json(brand, window, self.clock())
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", str(len(body)).encode()), (b"content-type", _JSON)],
            }
        )
        await send({"type": "http.response.body", "body": body})
