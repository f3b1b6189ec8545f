"""The subscriber protocol, without I/O.

The gateway hands every client text frame to :func:`parse_message` and gets a
typed command back (or a :class:`~wire.errors.ClientError` to answer with);
:class:`Subscription` applies subscribe/unsubscribe to a connection's tag set
and enforces the per-connection limits. Server messages are built by the
small ``*_message`` functions so their shape lives in one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from wire.core.errors import (
    ClientError,
    InvalidJSON,
    InvalidMessage,
    InvalidTag,
    RateLimited,
    TooManyTags,
    ValidationError,
    quoted,
)
from wire.core.ids import StreamKey, format_id, parse_cursor
from wire.core.tags import normalize_tags

MAX_BACKFILL = 500


@dataclass(frozen=True, slots=True)
class Subscribe:
    """Add tags; optionally replay history first (``since`` or ``backfill``)."""

    tags: tuple[str, ...]
    since: StreamKey | None = None
    backfill: int | None = None
    compact: bool = False


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """Remove tags."""

    tags: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Ping:
    """Application-level ping; answered with a pong."""


Command = Subscribe | Unsubscribe | Ping


def parse_message(data: str | bytes) -> Command:
    """Parse one client text frame into a command, or raise a ClientError."""
    try:
        msg = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise InvalidJSON("message is not valid JSON") from None
    if not isinstance(msg, dict):
        raise InvalidMessage("message must be a JSON object with a 'type'")
    kind = msg.get("type")
    if kind == "ping":
        return Ping()
    if kind == "subscribe":
        return parse_subscribe(msg)
    if kind == "unsubscribe":
        return Unsubscribe(_tag_list(msg))
    raise InvalidMessage(f"unknown message type {quoted(kind, 40)}", field="type")


def parse_subscribe(msg: dict[str, Any]) -> Subscribe:
    """Validate a subscribe message's fields (also used for query strings)."""
    tags = _tag_list(msg)
    since = msg.get("since")
    backfill = msg.get("backfill")
    compact = msg.get("compact", False)
    if since is not None and backfill is not None:
        raise ValidationError("give since or backfill, not both", field="backfill")
    if since is not None and not isinstance(since, str):
        raise ValidationError("since must be a stream id string", field="since")
    if backfill is not None and (
        isinstance(backfill, bool)
        or not isinstance(backfill, int)
        or not 0 <= backfill <= MAX_BACKFILL
    ):
        raise ValidationError(
            f"backfill must be an integer from 0 to {MAX_BACKFILL}", field="backfill"
        )
    if not isinstance(compact, bool):
        raise ValidationError("compact must be true or false", field="compact")
    return Subscribe(
        tags=tags,
        since=parse_cursor(since, field="since") if since is not None else None,
        backfill=backfill or None,
        compact=compact,
    )


def _tag_list(msg: dict[str, Any]) -> tuple[str, ...]:
    raw = msg.get("tags")
    if not isinstance(raw, list) or not all(isinstance(t, str) for t in raw):
        raise ValidationError("tags must be a list of strings", field="tags")
    return normalize_tags(raw, allow_wildcard=True)


@dataclass(slots=True)
class Subscription:
    """A connection's tag set and the limits on changing it."""

    max_tags: int = 100
    rate: int = 20
    tags: frozenset[str] = frozenset()
    _window: float = 0.0
    _count: int = 0
    _extra: dict[str, int] = field(default_factory=dict)

    def check_rate(self, now: float) -> None:
        """Count one subscribe/unsubscribe; raise RateLimited past ``rate`` a second."""
        if now - self._window >= 1.0:
            self._window, self._count = now, 0
        self._count += 1
        if self._count > self.rate:
            raise RateLimited(f"more than {self.rate} subscribe or unsubscribe messages a second")

    def subscribe(self, tags: tuple[str, ...]) -> frozenset[str]:
        """The tag set after adding ``tags``; raises TooManyTags and changes nothing."""
        new = self.tags | frozenset(tags)
        if len(new) > self.max_tags:
            raise TooManyTags(f"at most {self.max_tags} tags per connection", field="tags")
        self.tags = new
        return new

    def unsubscribe(self, tags: tuple[str, ...]) -> frozenset[str]:
        """The tag set after removing ``tags``."""
        self.tags = self.tags - frozenset(tags)
        return self.tags


def subscribed_message(tags: frozenset[str], position: StreamKey | None = None
                       ) -> dict[str, object]:
    """``{"type": "subscribed", "tags": [...], "position": id}``, tags sorted.

    ``position`` is the last stream id the gateway had fanned out when the
    change took effect: live items after it follow. A client that has not
    received an item yet resumes from it, so a reconnect loses nothing.
    """
    message: dict[str, object] = {"type": "subscribed", "tags": sorted(tags)}
    if position is not None:
        message["position"] = format_id(position)
    return message


def error_message(err: ClientError) -> dict[str, object]:
    """``{"type": "error", "code": ..., "message": ...}`` (plus ``field`` when known)."""
    return {"type": "error", **err.as_dict()}


def truncated_message(since: StreamKey, trimmed: StreamKey) -> dict[str, object]:
    """Told before a replay that starts after items that retention removed."""
    return {
        "type": "error",
        "code": "history_truncated",
        "message": f"items after {format_id(since)} up to {format_id(trimmed)} are no longer "
        "kept; sending everything still kept",
    }


PONG: dict[str, object] = {"type": "pong"}

__all__ = [
    "MAX_BACKFILL",
    "PONG",
    "Command",
    "InvalidTag",
    "Ping",
    "Subscribe",
    "Subscription",
    "Unsubscribe",
    "error_message",
    "parse_message",
    "parse_subscribe",
    "subscribed_message",
    "truncated_message",
]
