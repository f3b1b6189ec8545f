"""The listening socket: a cap on plain HTTP connections, and quiet accept errors.

WebSocket and SSE connections have their own cap (``WIRE_MAX_CONNECTIONS``,
checked before the upgrade). Plain HTTP connections (idle keep-alives, slow
or abandoned requests) are capped here, per process, at
``WIRE_MAX_HTTP_CONNECTIONS`` and never above what the open-files limit
leaves room for: a connection beyond it is answered ``503`` and closed at
once, so a flood of idle sockets cannot use up the descriptors that Redis,
new subscribers and the log need. Only an ``EventSource`` is told otherwise:
a browser never retries a 503, so its request head is read first (briefly,
and for a few connections at a time) and an event stream asked for gets a
stream that says to come back later, as at the stream cap.

When descriptors run out anyway, asyncio logs "socket.accept() out of system
resource" with a traceback once per connection waiting in the backlog (tens
of thousands of lines a second); :class:`AcceptErrors` keeps one line per
interval, with a count.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
import time
from collections.abc import Callable, Collection
from typing import Any, cast

import orjson

from wire.core import frames
from wire.web.cors import EXPOSE_HEADERS, read_origin

log = logging.getLogger("wire.web.listen")

#: Descriptors kept back from the plain HTTP cap for Redis connections, the
#: listening socket, log files and the like.
FD_RESERVE = 64


def http_connection_limit(configured: int) -> int:
    """``configured``, lowered to what the open-files limit leaves room for."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return configured
    room = max(1, soft - FD_RESERVE)
    if room < configured:
        log.warning(
            "plain HTTP connections capped at %d by the open-files limit (%d); "
            "raise ulimit -n for more",
            room,
            soft,
        )
    return min(configured, room)


_BODY = orjson.dumps(
    {
        "error": {
            "code": "too_many_connections",
            "message": "this server is at its HTTP connection limit; retry shortly",
        }
    }
)
REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Retry-After: 1\r\nConnection: close\r\nContent-Length: "
    + str(len(_BODY)).encode()
    + b"\r\n\r\n"
    + _BODY
)
#: The same 503 readable by a page on any origin (see :func:`refusal`).
REFUSAL_ANY_ORIGIN = REFUSAL.replace(
    b"Retry-After: 1\r\n",
    b"Retry-After: 1\r\nAccess-Control-Allow-Origin: *\r\n"
    b"Access-Control-Expose-Headers: " + EXPOSE_HEADERS.encode() + b"\r\n",
)


def refusal(allowed_origins: Collection[str]) -> bytes:
    """The 503 a connection over the cap gets, before its request is read.

    While no origin is listed (``WIRE_ALLOWED_ORIGINS`` unset) it carries
    ``Access-Control-Allow-Origin: *``, as every read's answer does, so that a
    dashboard on another origin can read the error and its ``Retry-After``
    instead of seeing a network failure. Once origins are listed the origin
    would have to be echoed, and the request is never read: no CORS headers.
    """
    return REFUSAL if allowed_origins else REFUSAL_ANY_ORIGIN


#: A connection over the cap is read for at most this long, and this many
#: bytes, to tell an ``EventSource`` from the rest; at most ``MAX_PEEKING`` at
#: once (the others are answered at once), so a flood holds no more
#: descriptors than that.
PEEK_SECONDS = 0.5
PEEK_BYTES = 8192
MAX_PEEKING = 32


class _Refused(asyncio.Protocol):
    """A connection over the cap: its request head read briefly (see
    :meth:`ConnectionCap.answer_for`), or not at all, then an answer, then closed."""

    def __init__(self, cap: ConnectionCap, peek: bool) -> None:
        self.cap = cap
        self.head = b""
        self.timer: asyncio.TimerHandle | None = None
        self.transport: asyncio.Transport | None = None
        if peek:
            # Counted from here, not from connection_made: one accept burst
            # makes many protocols before any connection is made, and the
            # cap's count must see each. The timer ends the read (and the
            # count) even for a connection that is never made.
            cap.peeking += 1
            self.timer = asyncio.get_running_loop().call_later(PEEK_SECONDS, self._answer)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A TCP transport, though uvloop's does not derive from asyncio's
        # classes (an isinstance check here failed, and uvloop then closed the
        # connection without the 503).
        self.transport = cast(asyncio.Transport, transport)
        if self.timer is None:  # not read: the readers' places are taken, or time is up
            self._answer()

    def data_received(self, data: bytes) -> None:
        self.head += data
        if b"\r\n\r\n" in self.head or len(self.head) >= PEEK_BYTES:
            self._answer()

    def eof_received(self) -> bool:
        self._answer()
        return True  # the answer is written; _answer closed the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_peeking()
        self.transport = None

    def _answer(self) -> None:
        transport, self.transport = self.transport, None
        self._stop_peeking()
        if transport is not None:
            transport.write(self.cap.answer_for(self.head))
            transport.close()

    def _stop_peeking(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
            self.cap.peeking -= 1


class _Counted(asyncio.Protocol):
    """aiohttp's protocol for one connection, with its end counted."""

    def __init__(self, inner: asyncio.Protocol, cap: ConnectionCap) -> None:
        self._inner = inner
        self._cap = cap

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cap.open -= 1
        self._inner.connection_lost(exc)


class ConnectionCap:
    """The protocol factory for ``loop.create_server``: aiohttp's, within the cap.

    ``open`` counts every connection (streams included) in O(1), from accept
    to close; ``streams()`` says how many of them are WebSocket/SSE
    subscribers, which count against their own cap instead.
    """

    def __init__(
        self,
        protocol: Callable[[], asyncio.Protocol],
        limit: int,
        streams: Callable[[], int],
        answer: bytes = REFUSAL,
        origins: Collection[str] = (),
    ) -> None:
        #: Makes aiohttp's protocol for one connection.
        self.protocol = protocol
        self.limit = limit
        self.streams = streams
        #: What a connection over the cap is answered (see :func:`refusal`).
        self.answer = answer
        #: ``WIRE_ALLOWED_ORIGINS``: the CORS of the stream an EventSource gets.
        self.origins = origins
        self.open = 0
        self.refused = 0
        #: Refused connections whose request head is being read.
        self.peeking = 0

    def __call__(self) -> asyncio.Protocol:
        if self.open - self.streams() >= self.limit:
            self.refused += 1
            return _Refused(self, peek=self.peeking < MAX_PEEKING)
        self.open += 1
        return _Counted(self.protocol(), self)

    def answer_for(self, head: bytes) -> bytes:
        """A refused connection's answer: the 503, or for an ``EventSource``
        (``GET /v1/sse`` accepting ``text/event-stream``) a stream that tells it
        to come back later (:func:`wire.core.frames.sse_come_back_later`)."""
        lines = head.split(b"\r\n")
        target = lines[0].split(b" ")[1] if lines[0].count(b" ") == 2 else b""
        if not lines[0].startswith(b"GET ") or target.split(b"?")[0] != b"/v1/sse":
            return self.answer
        fields = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            fields[name.strip().lower()] = value.strip()
        if b"text/event-stream" not in fields.get(b"accept", b"").lower():
            return self.answer
        origin = fields.get(b"origin")
        allow = read_origin(origin.decode("latin-1") if origin else None, self.origins)
        return _come_back_stream(allow)


def _come_back_stream(allow_origin: str | None) -> bytes:
    """The whole answer of an EventSource refused at the cap (:meth:`ConnectionCap.answer_for`)."""
    cors = b""
    if allow_origin is not None:
        cors = b"Access-Control-Allow-Origin: %s\r\n" % allow_origin.encode("latin-1")
    if allow_origin != "*":
        cors += b"Vary: Origin\r\n"
    stream = b"".join(
        b"%s: %s\r\n" % (name.encode(), value.encode())
        for name, value in frames.SSE_HEADERS.items()
    )
    return (
        b"HTTP/1.1 200 OK\r\n"
        + stream
        + b"Transfer-Encoding: chunked\r\nConnection: close\r\n"
        + cors
        + b"\r\n"
        + frames.http_chunk(frames.sse_come_back_later())
        + frames.LAST_CHUNK
    )


ACCEPT_MESSAGE = "socket.accept() out of system resource"


class AcceptErrors:
    """A loop exception handler that logs accept failures once per ``interval`` seconds.

    Everything else goes to the loop's default handler unchanged.
    """

    def __init__(self, interval: float = 10.0) -> None:
        self.interval = interval
        self.suppressed = 0
        self.next_log = 0.0

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") != ACCEPT_MESSAGE:
            loop.default_exception_handler(context)
            return
        self.suppressed += 1
        now = time.monotonic()
        if now < self.next_log:
            return
        exc = context.get("exception")
        code = errno.errorcode.get(getattr(exc, "errno", 0) or 0, "unknown")
        log.error(
            "accept() failed %d times (%s: out of file descriptors or memory); "
            "new connections wait in the backlog; next report in %gs at the earliest",
            self.suppressed,
            code,
            self.interval,
            extra={"failures": self.suppressed, "errno": code},
        )
        self.suppressed = 0
        self.next_log = now + self.interval
