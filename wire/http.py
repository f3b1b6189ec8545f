"""HTTP edge helpers: JSON responses and the one place errors become statuses."""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from wire.errors import ClientError, MethodNotAllowed, NotFound, PayloadTooLarge, ServiceUnavailable

log = logging.getLogger("wire.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, ConnectionError, TimeoutError)


_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
access = logging.getLogger("wire.access")


@web.middleware
async def request_log(request: web.Request, handler: Handler) -> web.StreamResponse:
    """One JSON log line per request, with a request id echoed as X-Request-Id.

    Only the method, route pattern and status are logged: never the query
    string (it may carry ``?token=``), headers or bodies.
    """
    given = request.headers.get("X-Request-Id", "")
    rid = given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex[:16]
    started = time.perf_counter()
    response = await handler(request)
    if not response.prepared:
        response.headers["X-Request-Id"] = rid
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


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Map every failure to a JSON error; bad input never becomes a 500."""
    try:
        return await handler(request)
    except ClientError as err:
        return error_response(err.status, err.as_dict())
    except ServiceUnavailable as err:
        return error_response(503, err.as_dict())
    except REDIS_DOWN as err:
        log.warning("redis unavailable: %s", err)
        return error_response(503, ServiceUnavailable("redis is unavailable, retry").as_dict())
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        kind = _HTTP_ERRORS.get(exc.status)
        if kind is not None:
            reason = exc.reason if kind is not NotFound else f"no route for {request.path}"
            response = error_response(exc.status, kind(reason).as_dict())
            # A 405 must say which methods the resource has (RFC 9110 15.5.6).
            if "Allow" in exc.headers:
                response.headers["Allow"] = exc.headers["Allow"]
            return response
        return error_response(exc.status, {"code": "http_error", "message": exc.reason})
    except Exception:
        # A bug, not bad input: log it whole, answer without internals.
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, {"code": "internal_error", "message": "internal error"})
