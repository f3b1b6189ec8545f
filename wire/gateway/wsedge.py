"""RFC 6455 rules that aiohttp's WebSocket server does not enforce.

aiohttp (checked up to 3.14.5, the newest release) completes the handshake for
``Sec-WebSocket-Version`` 7 and 8, parses unmasked client frames as if they
were masked (its reader is the same for both directions; its threat model
keeps that lenient by default), and takes close code 1006 and any code of
3000 or more from a client as valid, answering 1000. Here:

- :func:`refuse_version` answers a handshake for another version with
  ``426 Upgrade Required`` and ``Sec-WebSocket-Version: 13`` (RFC 6455 4.2.2),
  before any upgrade;
- :func:`check_handshake` names the header that makes a request no
  handshake at all, where aiohttp answers a bare ``400 Bad Request``;
- :class:`GuardedResponse` puts a :class:`FrameGuard` in front of aiohttp's
  frame parser. It reads only frame headers (and the two code bytes of a
  close frame) and closes the connection with 1002 and a reason through the
  hub, as the hub closes any connection, when a client frame is unmasked
  (RFC 6455 5.1) or a close frame carries a code that must not be sent
  (RFC 6455 7.4). Clients send little (subscribes, pongs), so the check
  costs nothing that matters; what the gateway sends is not touched.
"""

from __future__ import annotations

import base64
import binascii
from typing import Literal, Protocol

from aiohttp import hdrs, web
from aiohttp.http_websocket import WebSocketWriter

from wire.core.closecodes import CloseCode, sendable
from wire.core.errors import UnsupportedWebSocketVersion, ValidationError
from wire.core.frames import OP_CLOSE
from wire.gateway.hub import Conn, Hub
from wire.web.http import error_response

VERSION = "13"
#: Bytes of extended payload length after a 7-bit length of 126 or 127.
_EXTENDED = {126: 2, 127: 8}
_DROPPED = (False, b"")

UNMASKED = "client frames must be masked (RFC 6455 5.1)"
SHORT_CLOSE = "close frame payload of 1 byte (RFC 6455 5.5.1)"


def refuse_version(request: web.Request) -> web.Response | None:
    """426 for a WebSocket handshake that does not ask for version 13, else None.

    Only a request that asks to upgrade to WebSocket is checked; any other is
    left to the usual handshake errors.
    """
    if "websocket" not in request.headers.get(hdrs.UPGRADE, "").lower():
        return None
    asked = request.headers.get(hdrs.SEC_WEBSOCKET_VERSION, "").strip()
    if asked == VERSION:
        return None
    shown = repr(asked[:20]) if asked else "none"
    err = UnsupportedWebSocketVersion(
        f"WebSocket version {shown} is not supported; send Sec-WebSocket-Version: {VERSION}",
        field=hdrs.SEC_WEBSOCKET_VERSION,
    )
    response = error_response(err.status, err.as_dict())
    # RFC 6455 4.2.2: name the versions understood; RFC 9110 15.5.22: a 426
    # names the protocol to upgrade to.
    response.headers[hdrs.SEC_WEBSOCKET_VERSION] = VERSION
    response.headers[hdrs.UPGRADE] = "websocket"
    return response


def check_handshake(request: web.Request) -> None:
    """Raise a 400 naming the header that makes ``request`` no WebSocket handshake.

    The same checks as aiohttp's ``prepare()`` (RFC 6455 4.2.1), made first
    so that the answer says what to send: a browser tab opened on the URL, a
    proxy that drops ``Connection: Upgrade``, a client with a bad key.
    """
    headers = request.headers
    if headers.get(hdrs.UPGRADE, "").lower().strip() != "websocket":
        raise ValidationError(
            "GET /v1/ws is a WebSocket endpoint: send Upgrade: websocket and "
            "Connection: Upgrade (RFC 6455 4.1); /v1/sse serves the same feed over plain HTTP",
            field=hdrs.UPGRADE,
        )
    connection = ",".join(headers.getall(hdrs.CONNECTION, ()))
    tokens = {t.strip().lower() for t in connection.split(",")}
    if "upgrade" not in tokens:
        raise ValidationError(
            "Connection must include Upgrade (RFC 6455 4.1); a proxy in between must "
            "pass Upgrade and Connection on",
            field=hdrs.CONNECTION,
        )
    if not _good_key(headers.get(hdrs.SEC_WEBSOCKET_KEY, "")):
        raise ValidationError(
            "Sec-WebSocket-Key must be 16 random bytes in base64 (RFC 6455 4.1)",
            field=hdrs.SEC_WEBSOCKET_KEY,
        )


def _good_key(key: str) -> bool:
    try:
        return len(base64.b64decode(key, validate=True)) == 16
    except (binascii.Error, ValueError):
        return False


def _frame_at(data: bytes, pos: int) -> tuple[int, int] | str | None:
    """The frame starting at ``pos``: (bytes checked, payload bytes to skip after them).

    A string is the reason to refuse it; None means more bytes are needed.
    For a close frame the two code bytes count as checked.
    """
    have = len(data) - pos
    if have < 2:
        return None
    first, second = data[pos], data[pos + 1]
    if not second & 0x80:
        return UNMASKED
    length = second & 0x7F
    extended = _EXTENDED.get(length, 0)
    size = 2 + extended + 4  # header, extended length, masking key
    if have < size:
        return None
    if extended:
        length = int.from_bytes(data[pos + 2 : pos + 2 + extended], "big")
    if first & 0x0F != OP_CLOSE or length == 0:
        return size, length
    if length == 1:
        return SHORT_CLOSE
    if have < size + 2:
        return None
    key = pos + size - 4
    code = (data[pos + size] ^ data[key]) << 8 | (data[pos + size + 1] ^ data[key + 1])
    if not sendable(code):
        return f"invalid close code {code} (RFC 6455 7.4)"
    return size + 2, length - 2


class Parser(Protocol):
    """What aiohttp's protocol calls on a WebSocket payload parser."""

    def feed_data(self, data: bytes) -> tuple[bool, bytes]: ...
    def feed_eof(self) -> None: ...


class FrameGuard:
    """Checks client frame headers, then hands the bytes to aiohttp's parser.

    It follows frame boundaries with a few counters, keeping at most one
    incomplete header (16 bytes). After a refusal nothing more reaches the
    parser: the connection is closing.
    """

    __slots__ = ("_head", "_inner", "_skip", "conn", "hub", "refusal")

    def __init__(self, inner: Parser) -> None:
        self._inner = inner
        self._head = b""  # the start of a header that has not fully arrived
        self._skip = 0  # payload bytes of the current frame not yet arrived
        self.refusal: str | None = None
        self.hub: Hub | None = None
        self.conn: Conn | None = None

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        """Check ``data``; pass it on, or refuse the connection."""
        if self.refusal is not None:
            return _DROPPED
        data = bytes(data)  # asyncio may hand over a bytearray or memoryview
        self.refusal = self._scan(data)
        if self.refusal is None:
            return self._inner.feed_data(data)
        self._close()
        return _DROPPED

    def feed_eof(self) -> None:
        self._inner.feed_eof()

    def bind(self, hub: Hub, conn: Conn) -> None:
        """Close through ``hub``; a refusal that came before the connection existed closes now."""
        self.hub, self.conn = hub, conn
        if self.refusal is not None:
            self._close()

    def _close(self) -> None:
        if self.hub is not None and self.conn is not None and self.refusal is not None:
            self.hub.close(self.conn, CloseCode.PROTOCOL_ERROR, self.refusal)

    def _scan(self, data: bytes) -> str | None:
        """Walk the frame headers in ``data``; the reason to refuse, or None."""
        pos = self._skip
        if self._head:  # only ever between frames, so nothing to skip
            data, pos = self._head + data, 0
        end = len(data)
        while pos < end:
            found = _frame_at(data, pos)
            if found is None:
                self._head, self._skip = data[pos:], 0
                return None
            if isinstance(found, str):
                return found
            pos += found[0] + found[1]
        self._head, self._skip = b"", pos - end
        return None


class GuardedResponse(web.WebSocketResponse[Literal[True]]):
    """A WebSocketResponse whose incoming frames pass a :class:`FrameGuard` first."""

    guard: FrameGuard | None = None

    def _post_start(
        self, request: web.BaseRequest, protocol: str | None, writer: WebSocketWriter
    ) -> None:
        # Bytes that came right behind the handshake are fed to the parser as
        # soon as it is set; keep them back so they pass the guard as well.
        handler = request.protocol
        early, handler._message_tail = handler._message_tail, b""
        super()._post_start(request, protocol, writer)
        self.guard = FrameGuard(handler._payload_parser)
        handler._payload_parser = self.guard
        if early:
            handler.data_received(early)

    def bind(self, hub: Hub, conn: Conn) -> None:
        """Refusals close ``conn`` through ``hub`` (call right after the connection exists)."""
        assert self.guard is not None, "prepare() first"
        self.guard.bind(hub, conn)
