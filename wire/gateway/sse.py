"""``GET /v1/sse``: Server-Sent Events, one subscribe per connection, resumable.

The URL is the subscribe; an ``EventSource`` that reconnects says where it
got to with ``Last-Event-ID``. After the handover the hub writes every
event; the handler only waits for the connection to close.
"""

from __future__ import annotations

import asyncio

from aiohttp import HttpVersion11, web
from multidict import MultiDict

from wire.core import frames
from wire.core.errors import ClientError, TooManyConnections, UnsupportedHTTPVersion
from wire.core.ids import parse_cursor
from wire.core.protocol import Subscribe, check_tag_count, error_message
from wire.gateway import handover
from wire.gateway.handshake import admit, subscribe_from
from wire.gateway.session import Session
from wire.web.appkeys import SETTINGS
from wire.web.http import error_response

#: How long a browser waits before reconnecting, sent first on every stream.
RETRY = frames.http_chunk(b"retry: 1000\n\n")
HEADERS = frames.SSE_HEADERS


async def sse_handler(request: web.Request) -> web.StreamResponse:
    """``GET /v1/sse?tags=a,b&lang=en``: Server-Sent Events with Last-Event-ID resume."""
    try:
        _check_version(request)
        grant = admit(request)
        cmd = _sse_subscribe(request)
        grant.check_subscription(cmd.tags)
        # Refused before the stream starts: a stream that could only end would
        # have an EventSource reconnect every second, forever.
        check_tag_count(frozenset(cmd.tags), request.app[SETTINGS].max_tags)
    except TooManyConnections as err:
        if _wants_stream(request):
            return await _come_back_later(request)
        return error_response(err.status, err.as_dict())
    except ClientError as err:
        return error_response(err.status, err.as_dict())
    if request.method == "HEAD":
        # The headers a GET would get, and no stream: a HEAD response has no
        # body, and events written after it would corrupt the connection.
        return web.Response(headers=HEADERS)
    resp = web.StreamResponse(headers=HEADERS)
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    conn = handover.sse(request, resp, grant, request.app[SETTINGS].send_buffer)
    session = Session(request, conn, grant)
    closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_close(code: int, reason: str) -> None:
        if not closed.done():
            closed.set_result(None)

    conn.on_close = on_close
    session.hub.send(conn, RETRY)
    try:
        await session.handle(cmd)
        await closed
    except ClientError as err:
        session.reply(error_message(err))
    finally:
        session.end()
    return resp


def _wants_stream(request: web.Request) -> bool:
    """A GET that accepts an event stream: what every ``EventSource`` sends."""
    return request.method == "GET" and "text/event-stream" in request.headers.get("Accept", "")


async def _come_back_later(request: web.Request) -> web.StreamResponse:
    """The connection cap's refusal for an ``EventSource``: a stream that says why and ends.

    A browser's ``EventSource`` never retries a non-200 answer, so the 503
    that other clients get would end its feed for good, though the gateway
    only needs it to come back later. This stream reconnects it in
    ``FULL_RETRY_MS`` (with its ``Last-Event-ID``: nothing is lost), as a
    WebSocket client reconnects after a 1013 (see
    :func:`wire.core.frames.sse_come_back_later`; the plain HTTP cap answers
    the same, see :mod:`wire.web.listen`).
    """
    resp = web.StreamResponse(headers=HEADERS)
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    await resp.write(frames.sse_come_back_later())
    await resp.write_eof()
    return resp


def _check_version(request: web.Request) -> None:
    """Refuse a stream over HTTP/1.0: it has no chunked encoding to frame one.

    aiohttp raises a RuntimeError (a 500) when a chunked response is prepared
    for HTTP/1.0. A HEAD has no body, so it is answered as usual.
    """
    if request.version < HttpVersion11 and request.method != "HEAD":
        raise UnsupportedHTTPVersion(
            "the event stream needs HTTP/1.1 (chunked transfer encoding); behind a proxy, "
            "have it speak HTTP/1.1 to the wire (nginx: proxy_http_version 1.1)"
        )


def _sse_subscribe(request: web.Request) -> Subscribe:
    """``/v1/sse?tags=a,b`` (everything without tags), resuming from Last-Event-ID.

    An ``EventSource`` reconnects to the URL it was opened with and adds
    ``Last-Event-ID``: the header says where it got to, so the URL's
    ``since`` and ``backfill`` no longer apply. (Since with backfill would be
    a 400, and a browser never retries a 4xx: the feed would stop for good.)
    """
    q = MultiDict(request.query)
    resume = request.headers.get("Last-Event-ID")
    if resume:
        q.popall("since", None)
        q.popall("backfill", None)
        # Checked here so that a bad one is named as what the client sent.
        parse_cursor(resume, field="Last-Event-ID")
    # An empty ``tags=`` is the default, everything (as on GET /v1/items): a
    # stream's subscription is fixed, and one to nothing would never send a thing.
    tags = q.get("tags", "")
    return subscribe_from(
        q, tags if tags.replace(",", "").strip() else "*", resume or q.get("since")
    )
