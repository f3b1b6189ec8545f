"""HTTP edge helpers: JSON responses and the one place errors become statuses."""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import (
    MasterDownError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import TimeoutError as RedisTimeoutError

from wire.core.errors import (
    ClientError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    UnsupportedEncoding,
    quoted,
)

log = logging.getLogger("wire.web.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, ConnectionError, TimeoutError)
#: Error replies of a Redis that is up but serves no such command for now: out
#: of memory under ``noeviction``, a read-only replica (a failover demoted the
#: node), a replica cut off from its primary, a slot being moved. (LOADING is
#: a ConnectionError to redis-py, so in REDIS_DOWN already.)
REDIS_REFUSALS = (OutOfMemoryError, ReadOnlyError, MasterDownError, TryAgainError)
#: Those redis-py has no class for: the message keeps the code. BUSY: a script
#: or function ran past ``busy-reply-threshold``; NOREPLICAS: fewer replicas
#: than ``min-replicas-to-write``; UNBLOCKED: a blocking read (the stream
#: reader's XREAD) ended by the primary's demotion to a replica.
_REFUSAL_CODES = frozenset({"BUSY", "NOREPLICAS", "UNBLOCKED"})


def redis_unavailable(exc: BaseException) -> bool:
    """Redis cannot be reached, or answered that it cannot serve now: a 503, retry.

    Any other error reply (WRONGTYPE, a script's own error) is a bug or damaged
    data, not a condition to wait out.
    """
    if isinstance(exc, REDIS_DOWN + REDIS_REFUSALS):
        return True
    if not isinstance(exc, ResponseError):
        return False
    # A pipeline's error says which command failed, then Redis's own message.
    message = str(exc).rpartition("caused error: ")[2]
    return message.partition(" ")[0] in _REFUSAL_CODES


_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
access = logging.getLogger("wire.access")


@web.middleware
async def request_log(request: web.Request, handler: Handler) -> web.StreamResponse:
    """One JSON log line per request, with a request id echoed as X-Request-Id.

    Only the method, route pattern and status are logged: never the query
    string (it may carry ``?token=``), headers or bodies. Failures become
    JSON errors here too (:func:`error_answer`), logged with the status they
    got: one middleware rather than two, because a suspended middleware keeps
    its frame (about 300 bytes) for as long as the response runs, which for a
    WebSocket or SSE stream is the connection's lifetime.
    """
    given = request.headers.get("X-Request-Id", "")
    # Ids tell log lines apart, they guard nothing: the module's generator
    # (seeded from the OS, reseeded in a forked child) is enough, and the OS's
    # own costs a system call per request.
    rid = given if _REQUEST_ID.fullmatch(given) else f"{random.getrandbits(64):016x}"
    started = time.perf_counter()
    try:
        response = await handler(request)
    except Exception as exc:
        response = error_answer(request, exc)
    if not response.prepared:
        response.headers["X-Request-Id"] = rid
    if not access.isEnabledFor(logging.INFO):
        return response
    resource = request.match_info.route.resource
    access.info(
        "request",
        extra={
            "request_id": rid,
            "method": request.method,
            "route": resource.canonical if resource is not None else "unmatched",
            "status": response.status,
            "ms": round((time.perf_counter() - started) * 1000, 2),
        },
    )
    return response


def json_response(data: object, status: int = 200) -> web.Response:
    """A JSON response serialized with orjson."""
    return raw_json(orjson.dumps(data), status)


def raw_json(body: bytes, status: int = 200) -> web.Response:
    """A response around JSON that is already serialized (stored items are)."""
    return web.Response(body=body, status=status, content_type="application/json")


def error_response(status: int, body: dict[str, str]) -> web.Response:
    """``{"error": {"code", "message", "field"?}}`` with the given status."""
    return json_response({"error": body}, status)


_HTTP_ERRORS: dict[int, type[ClientError]] = {
    404: NotFound,
    405: MethodNotAllowed,
    413: PayloadTooLarge,
}


def error_answer(request: web.Request, exc: Exception) -> web.StreamResponse:
    """The JSON error for a failure; bad input never becomes a 500.

    An HTTP exception below 400 (a redirect) is not a failure: it is raised
    again for aiohttp to send.
    """
    if isinstance(exc, ClientError):
        return error_response(exc.status, exc.as_dict())
    if isinstance(exc, ServiceUnavailable):
        return error_response(503, exc.as_dict())
    if redis_unavailable(exc):
        log.warning("redis unavailable: %s", exc)
        return error_response(503, ServiceUnavailable("redis is unavailable, retry").as_dict())
    if isinstance(exc, web.HTTPException):
        return _http_error(request, exc)
    # A bug, not bad input: log it whole, answer without internals.
    log.error("unhandled error on %s %s", request.method, request.path, exc_info=exc)
    return error_response(500, {"code": "internal_error", "message": "internal error"})


def _http_error(request: web.Request, exc: web.HTTPException) -> web.StreamResponse:
    """aiohttp's own HTTP errors (404, 405, 413, ...) as JSON errors; others raised again."""
    if exc.status < 400:
        raise exc
    kind = _HTTP_ERRORS.get(exc.status)
    if kind is None:
        return error_response(exc.status, {"code": "http_error", "message": exc.reason})
    reason = exc.reason if kind is not NotFound else f"no route for {quoted(request.path)}"
    response = error_response(exc.status, kind(reason).as_dict())
    # A 405 must say which methods the resource has (RFC 9110 15.5.6).
    if "Allow" in exc.headers:
        response.headers["Allow"] = exc.headers["Allow"]
    return response


# -- request bodies: "100 Continue" only when wanted, never drained at a cost ------

#: The content codings a request body may come in: what aiohttp inflates
#: without optional packages. (It passes any other coding through as if it
#: were ``identity``, so each is refused before the body is read.)
ENCODINGS = frozenset({"", "identity", "gzip", "deflate"})
ENCODINGS_MESSAGE = "Content-Encoding must be identity, gzip or deflate"


def check_encoding(request: web.Request) -> None:
    """Refuse a body in a content coding wire does not read: 415, before reading it."""
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding not in ENCODINGS:
        raise UnsupportedEncoding(
            f"{ENCODINGS_MESSAGE}, got {quoted(encoding)}", field="Content-Encoding"
        )


async def defer_continue(request: web.Request) -> web.StreamResponse | None:
    """The routes' ``Expect`` handler: say nothing yet.

    aiohttp's default answers ``100 Continue`` before any middleware or
    handler runs, inviting a 5 MB upload that is then refused (401, 413...).
    Here the handler decides: :func:`send_continue` is called just before the
    body is read. An expectation other than ``100-continue`` is a 417.
    """
    if request.headers.get("Expect", "").lower() == "100-continue":
        return None
    body = {"code": "expectation_failed", "message": "only Expect: 100-continue is supported"}
    return error_response(417, body)


def defer_continue_everywhere(app: web.Application) -> None:
    """Install :func:`defer_continue` on every route of ``app`` (call after adding them)."""
    for route in app.router.routes():
        # aiohttp offers expect_handler= only when a route is added, and the
        # routes are added by each half's setup function; this one attribute
        # covers them all (tests/test_hardening_edge.py checks it works).
        route._expect_handler = defer_continue


async def send_continue(request: web.Request) -> None:
    """Send ``100 Continue`` if the client waits for it: its body is about to be read."""
    expect = request.headers.get("Expect", "").lower()
    if expect == "100-continue" and request.version >= (1, 1) and not request.content.is_eof():
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # the response proper has not started


def _unread_costly(request: web.Request) -> bool:
    """The body is not all in, and taking it in would cost more than bytes.

    aiohttp drains an unread body after the response (for up to 10 s) so the
    connection can be reused; a compressed body is inflated while drained (a
    1 MB gzip bomb is 1 GB of work), and a client that sent ``Expect:
    100-continue`` and was never told to continue has nothing to drain.
    """
    if request.content.is_eof():
        return False
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    return encoding not in ("", "identity") or "Expect" in request.headers


def _may_leave_costly_body(request: web.Request) -> bool:
    """Whether :func:`_unread_costly` could ever hold for this request."""
    if not request.body_exists:
        return False
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    return encoding not in ("", "identity") or "Expect" in request.headers


@web.middleware
def close_unread_body(request: web.Request, handler: Handler) -> Awaitable[web.StreamResponse]:
    """Answer a request whose body was left unread, then close instead of draining.

    The outermost middleware: the response is final (request id, CORS
    headers) by the time it is sent here. A request that cannot leave a
    costly body (no body, or a plain one without ``Expect``: every WebSocket
    and SSE request) is handed on directly, not awaited, so no frame of this
    middleware lives as long as a stream.
    """
    if not _may_leave_costly_body(request):
        return handler(request)
    return _close_if_unread(request, handler)


async def _close_if_unread(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The body may stay unread and cost work to drain: close after answering."""
    response = await handler(request)
    if isinstance(response, web.WebSocketResponse) or not _unread_costly(request):
        return response
    if not response.prepared:
        response.force_close()  # Connection: close
    await response.prepare(request)
    await response.write_eof()
    # Without this aiohttp would read (and inflate) the rest to reuse the
    # connection. The response is already written; close() flushes it first.
    request.protocol.force_close()
    return response
