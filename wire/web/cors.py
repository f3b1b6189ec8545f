"""Cross-origin reads for dashboards, and the editor API for listed origins only.

Which origin may use what (``WIRE_ALLOWED_ORIGINS``, comma-separated):

- **Reads** (``GET`` of ``/v1/items``, ``/v1/stories``, ``/v1/sse`` and ``/v1/feed.atom``): any
  origin (``Access-Control-Allow-Origin: *``) while no origin is listed, like
  the WebSocket, which then accepts any ``Origin`` too; once origins are
  listed, only those (the origin is echoed, with ``Vary: Origin``).
- **The editor API** (everything else under ``/v1/``: publish, withdraw,
  embargoes): listed origins only, never ``*``.

The headers are added when a response is prepared, so errors (401, 404...)
and the SSE stream carry them too and a browser can read the JSON error.
Bearer tokens are not cookies: no ``Access-Control-Allow-Credentials``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Collection

from aiohttp import web

from wire.core.errors import Forbidden, quoted
from wire.web.appkeys import SETTINGS
from wire.web.http import Handler

_READ_PREFIXES = ("/v1/items", "/v1/stories/", "/v1/sse", "/v1/feed.atom")
_READ_METHODS = frozenset({"GET", "HEAD"})
#: Request headers a page may send (beyond the CORS-safelisted ones).
ALLOW_HEADERS = "Authorization, Content-Type, Idempotency-Key, Last-Event-ID, X-Request-Id"
#: Response headers a page may read (beyond the CORS-safelisted ones).
EXPOSE_HEADERS = "X-Request-Id, ETag, Retry-After, Location, Allow, Link"
MAX_AGE = "600"


def _is_read(method: str, path: str) -> bool:
    return method in _READ_METHODS and path.startswith(_READ_PREFIXES)


def allow_origin(request: web.Request, method: str) -> str | None:
    """The ``Access-Control-Allow-Origin`` value for ``method`` on this path, or None."""
    listed = request.app[SETTINGS].allowed_origins
    origin = request.headers.get("Origin")
    if _is_read(method, request.path):
        return read_origin(origin, listed)
    if origin is not None and origin in listed and request.path.startswith("/v1/"):
        return origin
    return None


def read_origin(origin: str | None, listed: Collection[str]) -> str | None:
    """A read's ``Access-Control-Allow-Origin``: ``*`` while no origin is listed,
    else the request's ``Origin`` when it is listed (None: no CORS headers)."""
    if not listed:
        return "*"
    return origin if origin is not None and origin in listed else None


async def add_cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: the CORS headers of every ``/v1/`` response."""
    if not request.path.startswith("/v1/") or request.path == "/v1/ws":
        return
    method = request.method
    if method == "OPTIONS":  # a preflight: answered for the method it asks about
        method = request.headers.get("Access-Control-Request-Method", method)
    set_cors_headers(response, allow_origin(request, method))


def set_cors_headers(response: web.StreamResponse, allow: str | None) -> None:
    """A response's CORS headers for ``Access-Control-Allow-Origin: allow`` (None: none)."""
    if allow != "*":
        # The answer depends on Origin: shared caches must keep one per origin.
        response.headers.add("Vary", "Origin")
    if allow is not None:
        response.headers["Access-Control-Allow-Origin"] = allow
        response.headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS


@web.middleware
def preflight(request: web.Request, handler: Handler) -> Awaitable[web.StreamResponse]:
    """Answer CORS preflights (``OPTIONS`` with ``Access-Control-Request-Method``).

    A preflight for a method the route has, from an origin allowed to use it,
    is 204; from any other origin it is 403 without CORS headers, which the
    browser reports as a blocked request. Unknown routes stay 404.

    Any other request is handed on directly, not awaited here: a suspended
    middleware keeps its frame (about 300 bytes) for as long as the response
    runs, which for a WebSocket or SSE stream is the connection's lifetime.
    """
    wanted = request.headers.get("Access-Control-Request-Method")
    if request.method != "OPTIONS" or wanted is None:
        return handler(request)
    return _answer_preflight(request, handler, wanted)


async def _answer_preflight(
    request: web.Request, handler: Handler, wanted: str
) -> web.StreamResponse:
    """204 with the allowed method and headers, or 403 (see :func:`preflight`)."""
    refused = request.match_info.http_exception
    allowed = getattr(refused, "allowed_methods", None)
    if allowed is None:  # no such route (or, some day, a real OPTIONS handler)
        return await handler(request)
    if wanted not in allowed:
        raise Forbidden(f"{quoted(wanted)} is not a method of {quoted(request.path)}")
    origin = allow_origin(request, wanted)
    if origin is None:
        raise Forbidden(f"origin {quoted(request.headers.get('Origin', ''))} may not {wanted} here")
    response = web.Response(status=204)
    response.headers["Access-Control-Allow-Methods"] = wanted
    response.headers["Access-Control-Allow-Headers"] = ALLOW_HEADERS
    response.headers["Access-Control-Max-Age"] = MAX_AGE
    response.headers["Vary"] = "Access-Control-Request-Method, Access-Control-Request-Headers"
    return response
