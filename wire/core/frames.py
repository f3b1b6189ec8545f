"""Wire encodings of outgoing messages, built once and written to many sockets.

Server-to-client WebSocket frames are never masked (RFC 6455 section 5.1), so
one frame's bytes serve every connection unchanged; the gateway builds each
item's frame once per process. SSE events are written inside HTTP/1.1 chunked
encoding, whose framing depends only on the length, so a whole chunk is built
once too.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import orjson

from wire.core.closecodes import CloseCode

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


#: The most bytes of item messages one batched frame carries (an item larger than
#: this goes in a frame of its own): a quarter of the 1 MiB a client library such
#: as ``websockets`` accepts by default, so a replay page never meets that limit.
BATCH_BYTES = 256 * 1024


def payload_of(frame: bytes) -> memoryview:
    """The payload of a frame built by :func:`ws_frame`, without copying it."""
    n = frame[1] & 0x7F
    return memoryview(frame)[2 if n < 126 else 4 if n == 126 else 10 :]


def ws_batch(item_frames: Sequence[bytes]) -> bytes:
    """Item frames rewritten as few text frames, their messages separated by newlines.

    For a connection that asked for batches (``/v1/ws?batch=1``): a burst then
    costs its client one frame to read instead of one per item (in a burst of
    1,000 x 200 the subscriber's CPU per item halved). A client splits each
    frame on ``\n``: compact JSON never holds a raw newline (one inside a
    string is escaped), so every line is one message, exactly the frame a
    connection without batches gets. Frames hold at most :data:`BATCH_BYTES`.
    """
    out: list[bytes] = []
    group: list[memoryview] = []
    size = 0
    for frame in item_frames:
        payload = payload_of(frame)
        if group and size + len(payload) > BATCH_BYTES:
            out.append(ws_frame(b"\n".join(group)))
            group, size = [], 0
        group.append(payload)
        size += len(payload) + 1
    if group:
        out.append(ws_frame(b"\n".join(group)))
    return out[0] if len(out) == 1 else b"".join(out)


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


#: The chunk that ends a chunked HTTP body.
LAST_CHUNK = b"0\r\n\r\n"


def sse_end(code: int, reason: str) -> bytes:
    """The end of an event stream the server closes: a comment naming why (the
    WebSocket close code and reason; ``EventSource`` ignores comments), then
    the last chunk, so that the response ends cleanly instead of being cut
    off (``curl -N`` reports a cut-off chunked body as an error)."""
    return http_chunk(sse_closed(code, reason)) + LAST_CHUNK


def sse_event(event: str, data: bytes, event_id: str | None = None) -> bytes:
    """One Server-Sent Event; ``data`` must be one line (compact JSON is)."""
    head = b"id: %s\n" % event_id.encode() if event_id is not None else b""
    return head + b"event: %s\ndata: %s\n\n" % (event.encode(), data)


def sse_comment(text: str) -> bytes:
    """A comment line, used as a keep-alive that EventSource ignores."""
    return b": %s\n\n" % text.encode()


#: An event stream's response headers (``X-Accel-Buffering``: nginx must not buffer it).
SSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}
#: How long (ms) an EventSource turned away at a connection cap waits to try again.
FULL_RETRY_MS = 5000
FULL_REASON = "too many connections, retry"


def sse_come_back_later() -> bytes:
    """What an ``EventSource`` turned away at a connection cap reads: to come
    back in :data:`FULL_RETRY_MS` (with its ``Last-Event-ID``: nothing is
    lost), and why. A browser never retries a non-200 answer, so the 503 other
    clients get would end its feed for good."""
    return b"retry: %d\n\n" % FULL_RETRY_MS + sse_closed(CloseCode.TRY_AGAIN_LATER, FULL_REASON)


def sse_closed(code: int, reason: str) -> bytes:
    """The comment that says why an event stream ends: the WebSocket close code
    and reason a WebSocket client would get."""
    return sse_comment(f"closed {code:d} {reason}")
