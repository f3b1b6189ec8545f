"""Every WebSocket close code the wire sends or accepts, in one place.

The gateway closes a connection only for the reasons listed here, each with a
fixed reason text where one helps the client decide what to do (the table in
docs/protocol.md). Codes a client may send are checked against RFC 6455 7.4:
some codes exist only to report what happened locally and must never appear
on the wire.
"""

from __future__ import annotations

from enum import IntEnum


class CloseCode(IntEnum):
    """Close codes of RFC 6455 7.4.1 that the wire uses, plus its own 4xxx codes."""

    NORMAL = 1000  #: the answer to a client's valid close
    GOING_AWAY = 1001  #: the gateway is shutting down: reconnect anywhere with ``since``
    PROTOCOL_ERROR = 1002  #: a framing error, or no pong by the next keep-alive round
    INVALID_TEXT = 1007  #: a text frame that is not UTF-8
    MESSAGE_TOO_BIG = 1009  #: a client message over ``WIRE_MAX_FRAME``
    INTERNAL_ERROR = 1011  #: a bug on our side, logged; reconnect with ``since``
    TRY_AGAIN_LATER = 1013  #: starting, or Redis unreachable: reconnect after a moment
    SLOW_CONSUMER = 4008  #: unsent data passed ``WIRE_MAX_BUFFER``: resume with ``since``


#: Codes a peer may put in a close frame (RFC 6455 7.4.1-7.4.2): 1004 is
#: reserved, and 1005, 1006 and 1015 only report what happened locally.
_SENDABLE_BELOW_3000 = frozenset(range(1000, 1004)) | frozenset(range(1007, 1015))


def sendable(code: int) -> bool:
    """True when ``code`` may appear in a close frame on the wire."""
    return code in _SENDABLE_BELOW_3000 or 3000 <= code <= 4999
