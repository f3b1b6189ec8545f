"""The one exception tree of wire.

Every error a client can cause is a :class:`ClientError` that carries its
machine-readable ``code`` and the HTTP ``status`` it maps to. The HTTP edge
maps them to responses in one place (``wire.web.http.error_answer``); on an
open WebSocket they become ``error`` messages, and the connection stays open.
Close codes are not errors' business: they live in ``wire.core.closecodes``.
"""

from __future__ import annotations

#: How much of a client's input an error message may quote (field names too).
MAX_QUOTE = 100


def quoted(value: object, limit: int = MAX_QUOTE) -> str:
    """``value`` quoted for an error message: its repr, cut to ``limit`` characters.

    Every message that repeats what a client sent goes through here, so a
    megabyte field name or path never comes back in the error (nor in a log).
    """
    text = value if isinstance(value, str) else str(value)
    if len(text) > limit:
        return repr(text[:limit]) + "..."
    return repr(text)


class WireError(Exception):
    """Base class of every error raised by wire."""


class ClientError(WireError):
    """A request or message that the client got wrong."""

    code = "bad_request"
    status = 400

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        # A field named by the client (an unknown one) is client input too.
        self.field = field if field is None or len(field) <= MAX_QUOTE else field[:MAX_QUOTE]

    def as_dict(self) -> dict[str, str]:
        """The JSON error body: code, message and, when known, the field."""
        body = {"code": self.code, "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        return body


class InvalidJSON(ClientError):
    code = "invalid_json"


class InvalidBody(ClientError):
    """A body that cannot be read: corrupt compression, broken chunked framing."""

    code = "invalid_body"


class ValidationError(ClientError):
    code = "invalid_field"


class InvalidTag(ValidationError):
    code = "invalid_tag"


class InvalidMessage(ClientError):
    """A WebSocket message that is not one the protocol knows."""

    code = "invalid_message"


class TooManyTags(ClientError):
    code = "too_many_tags"


class RateLimited(ClientError):
    code = "rate_limited"
    status = 429


class Unauthorized(ClientError):
    code = "unauthorized"
    status = 401


class Forbidden(ClientError):
    code = "forbidden"
    status = 403


class NotFound(ClientError):
    code = "not_found"
    status = 404


class Gone(ClientError):
    """The item existed but its story was withdrawn."""

    code = "withdrawn"
    status = 410


class StoryWithdrawn(ClientError):
    code = "story_withdrawn"
    status = 409


class MethodNotAllowed(ClientError):
    code = "method_not_allowed"
    status = 405


class UnsupportedWebSocketVersion(ClientError):
    """A WebSocket handshake for a version other than 13 (RFC 6455 4.2.2)."""

    code = "unsupported_websocket_version"
    status = 426


class UnsupportedHTTPVersion(ClientError):
    """An event stream asked for over HTTP/1.0, which cannot frame an endless body.

    The stream is chunked (the hub writes whole chunks), and HTTP/1.0 has no
    chunked encoding; an HTTP/1.0 proxy would pass the chunk sizes on as
    data. 505 is HTTP's answer for a version the server will not use
    (RFC 9110 15.6.6).
    """

    code = "http_version_not_supported"
    status = 505


class PayloadTooLarge(ClientError):
    code = "payload_too_large"
    status = 413


class RequestTimeout(ClientError):
    code = "request_timeout"
    status = 408


class UnsupportedMediaType(ClientError):
    code = "unsupported_media_type"
    status = 415


class UnsupportedEncoding(ClientError):
    """A body in a content coding wire does not read (RFC 9110 8.4.1: 415)."""

    code = "unsupported_encoding"
    status = 415


class MalformedRequest(ClientError):
    """Bytes the HTTP parser refused: no route or handler ever saw them."""

    code = "malformed_request"


class TooManyWebhooks(ClientError):
    """The registry holds ``WIRE_MAX_WEBHOOKS`` already."""

    code = "too_many_webhooks"
    status = 409


class WebhookDamaged(ClientError):
    """A webhook whose key in Redis holds another type: it can only be deleted."""

    code = "webhook_damaged"
    status = 409


class IdempotencyKeyReused(ClientError):
    code = "idempotency_key_reused"
    status = 422


class TooManyConnections(ClientError):
    code = "too_many_connections"
    status = 503


class ServiceUnavailable(WireError):
    """Redis (or another dependency) cannot be reached; the client may retry."""

    code = "unavailable"
    status = 503

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": str(self) or "service unavailable, retry later"}


class KeyConflict(WireError):
    """A Redis key holds a type wire never writes there (damaged or foreign data).

    The write scripts check this before their first write and write nothing;
    the request answers 500 and the log names the key.
    """


class RedisMissing(WireError):
    """No Redis URL was given and no ``redis-server`` binary could be started."""
