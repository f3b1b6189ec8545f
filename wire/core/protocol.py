"""The subscriber protocol, without I/O.

The gateway hands every client text frame to :func:`parse_message` and gets a
typed command back (or a :class:`~wire.errors.ClientError` to answer with);
:class:`Subscription` applies subscribe/unsubscribe to a connection's tag set
and language filter and enforces the per-connection limits. Server messages are built by the
small ``*_message`` functions so their shape lives in one place.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from wire.core.entry import language_keys
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
from wire.core.language import normalize_language
from wire.core.resume import Window
from wire.core.tags import normalize_tags

MAX_BACKFILL = 500
#: Languages one connection may filter on.
MAX_LANGUAGES = 10


@dataclass(frozen=True, slots=True)
class Subscribe:
    """Add tags; optionally replay history first (``since`` or ``backfill``).

    ``languages``, when given, replaces the connection's language filter
    (empty: every language); None leaves it as it was.
    """

    tags: tuple[str, ...]
    since: StreamKey | None = None
    backfill: int | None = None
    compact: bool = False
    languages: tuple[str, ...] | None = None


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
        languages=_language_list(msg),
    )


def _language_list(msg: dict[str, Any]) -> tuple[str, ...] | None:
    """The subscribe's ``languages``, normalized, sorted and deduplicated (None when absent)."""
    raw = msg.get("languages")
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise ValidationError("languages must be a list of BCP 47 language tags", field="languages")
    languages = sorted({normalize_language(lang, "languages") for lang in raw})
    if len(languages) > MAX_LANGUAGES:
        raise ValidationError(f"at most {MAX_LANGUAGES} languages", field="languages")
    return tuple(languages)


def _tag_list(msg: dict[str, Any]) -> tuple[str, ...]:
    raw = msg.get("tags")
    if not isinstance(raw, list) or not all(isinstance(t, str) for t in raw):
        raise ValidationError("tags must be a list of strings", field="tags")
    return normalize_tags(raw, allow_wildcard=True)



def check_tag_count(tags: Collection[str], max_tags: int, per: str = "connection") -> None:
    """TooManyTags past ``max_tags`` distinct tags: the one rule for a WebSocket's
    subscription, an event stream's and a webhook's filter."""
    if len(tags) > max_tags:
        raise TooManyTags(f"at most {max_tags} tags per {per}", field="tags")

@dataclass(slots=True)
class Subscription:
    """A connection's tag set, its language filter and the limits on changing them."""

    max_tags: int = 100
    rate: int = 20
    tags: frozenset[str] = frozenset()
    #: The languages the connection receives; empty: every language.
    languages: frozenset[str] = frozenset()
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

    def subscribe(
        self, tags: tuple[str, ...], languages: tuple[str, ...] | None = None
    ) -> frozenset[str]:
        """The tag set after adding ``tags`` (and ``languages``, when given, replacing
        the language filter); raises TooManyTags and changes nothing."""
        new = self.tags | frozenset(tags)
        check_tag_count(new, self.max_tags)
        self.tags = new
        if languages is not None:
            self.languages = frozenset(languages)
        return new

    @property
    def keys(self) -> frozenset[str]:
        """The hub's subscription keys: the tags, limited to the languages if any."""
        return language_keys(self.tags, self.languages)

    def unsubscribe(self, tags: tuple[str, ...]) -> frozenset[str]:
        """The tag set after removing ``tags``."""
        self.tags = self.tags - frozenset(tags)
        return self.tags


def subscribed_message(
    tags: frozenset[str],
    position: StreamKey | None = None,
    languages: frozenset[str] = frozenset(),
) -> dict[str, object]:
    """``{"type": "subscribed", "tags": [...], "position": id}``, tags sorted.

    ``"languages": [...]`` (sorted) follows the tags while the connection
    has a language filter; without one the message is as it always was.

    ``position`` is the last stream id the gateway had fanned out when the
    change took effect: live items after it follow. A client that has not
    received an item yet resumes from it, so a reconnect loses nothing.
    """
    message: dict[str, object] = {"type": "subscribed", "tags": sorted(tags)}
    if languages:
        message["languages"] = sorted(languages)
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
        "code": TRUNCATED,
        "message": f"items after {format_id(since)} up to {format_id(trimmed)} are no longer "
        "kept; sending everything still kept",
    }


#: The key of the ranges retention removed, in an HTTP read's answer; the code of
#: the WebSocket/SSE error saying the same (:func:`truncated_message`).
TRUNCATED = "history_truncated"


def truncated_ranges(gaps: Sequence[Window]) -> list[dict[str, str]]:
    """The ranges retention removed, as an HTTP read's answer lists them under
    :data:`TRUNCATED` (``after`` < id <= ``upto``)."""
    return [{"after": format_id(g.after), "upto": format_id(g.upto)} for g in gaps]


PONG: dict[str, object] = {"type": "pong"}

__all__ = [
    "MAX_BACKFILL",
    "MAX_LANGUAGES",
    "PONG",
    "TRUNCATED",
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
    "truncated_ranges",
]
