"""Wire encodings of outgoing messages, built once and written to many sockets.

Server-to-client WebSocket frames are never masked (RFC 6455 section 5.1), so
one frame's bytes serve every connection unchanged; the gateway builds each
item's frame once per process. SSE events are written inside HTTP/1.1 chunked
encoding, whose framing depends only on the length, so a whole chunk is built
once too.
"""

from __future__ import annotations

import struct

import orjson

_LEN2 = struct.Struct("!BBH").pack
_LEN3 = struct.Struct("!BBQ").pack
OP_TEXT = 0x1
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA


def ws_frame(payload: bytes, opcode: int = OP_TEXT) -> bytes:
    """One final, unmasked WebSocket frame carrying ``payload``."""
    n = len(payload)
    first = 0x80 | opcode
    if n < 126:
        return bytes((first, n)) + payload
    if n < 65536:
        return _LEN2(first, 126, n) + payload
    return _LEN3(first, 127, n) + payload


def ws_pong(payload: bytes) -> bytes:
    """The answer to a client's ping: a pong with the same (at most 125-byte) payload."""
    return ws_frame(payload[:125], OP_PONG)


#: The keep-alive ping every WebSocket connection gets each ``ping_interval``.
WS_PING = ws_frame(b"", OP_PING)


def ws_message(message: dict[str, object]) -> bytes:
    """A JSON text frame for a control message (subscribed, error, pong)."""
    return ws_frame(orjson.dumps(message))


def ws_close(code: int, reason: str) -> bytes:
    """A close frame; the reason is cut to fit the 123 bytes a control frame allows."""
    return ws_frame(struct.pack("!H", code) + reason.encode()[:123], OP_CLOSE)


def item_message(item_json: bytes) -> bytes:
    """The ``{"type": "item", "item": ...}`` payload around stored item JSON."""
    return b'{"type":"item","item":' + item_json + b"}"


def http_chunk(data: bytes) -> bytes:
    """``data`` as one HTTP/1.1 chunk."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def sse_event(event: str, data: bytes, event_id: str | None = None) -> bytes:
    """One Server-Sent Event; ``data`` must be one line (compact JSON is)."""
    head = b"id: %s\n" % event_id.encode() if event_id is not None else b""
    return head + b"event: %s\ndata: %s\n\n" % (event.encode(), data)


def sse_comment(text: str) -> bytes:
    """A comment line, used as a keep-alive that EventSource ignores."""
    return b": %s\n\n" % text.encode()
