"""What a feed yields: news items and withdrawals, as frozen dataclasses.

Both arrive from the server as ``{"type": "item", "item": {...}}``; a
withdrawal (a kill) is told apart by ``"pubstatus": "canceled"``. Fields the
server adds later are kept in ``raw`` and otherwise ignored, so an older
library keeps working against a newer server.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from subscriber.cursor import stream_key
from subscriber.errors import ProtocolError


@dataclass(frozen=True, slots=True)
class Item:
    """One version of a story, as published."""

    id: str
    """The stream id (``1717236000000-0``): the item's place in the wire's one order."""
    guid: str
    """The story's id; every version of a story shares it."""
    version: int
    title: str
    tags: tuple[str, ...]
    published_at: datetime
    urgency: int = 5
    """1 (flash) to 9."""
    mark: str | None = None
    """A label such as ``Breaking``, ``Exclusive`` or ``Updated``."""
    subtitle: str | None = None
    url: str | None = None
    body: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)
    """The item's JSON exactly as the server sent it."""

    @property
    def is_update(self) -> bool:
        """True for a new version of a story published before (replace it in place)."""
        return self.version > 1


@dataclass(frozen=True, slots=True)
class Withdrawal:
    """A story was killed: stop showing every version of ``guid``."""

    id: str
    guid: str
    version: int
    reason: str
    tags: tuple[str, ...]
    published_at: datetime | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)


Event = Item | Withdrawal


def parse_event(data: object) -> Event:
    """Build an Item or a Withdrawal from the ``item`` of an item message."""
    if not isinstance(data, dict):
        raise ProtocolError(f"an item must be a JSON object, got {type(data).__name__}")
    try:
        if data.get("pubstatus") == "canceled":
            return _withdrawal(data)
        return _item(data)
    except (KeyError, TypeError, ValueError) as err:
        raise ProtocolError(f"malformed item {str(data.get('id'))[:40]}: {err!r}") from None


def _item(data: dict[str, Any]) -> Item:
    return Item(
        id=_id(data["id"]),
        guid=_str(data["guid"]),
        version=int(data.get("version") or 1),
        title=_str(data["title"]),
        tags=_tags(data["tags"]),
        published_at=_time(data["published_at"]),
        urgency=int(data.get("urgency") or 5),
        mark=_opt(data.get("mark")),
        subtitle=_opt(data.get("subtitle")),
        url=_opt(data.get("url")),
        body=_opt(data.get("body")),
        raw=data,
    )


def _withdrawal(data: dict[str, Any]) -> Withdrawal:
    when = data.get("published_at")
    return Withdrawal(
        id=_id(data["id"]),
        guid=_str(data["guid"]),
        version=int(data.get("version") or 1),
        reason=_opt(data.get("reason")) or "",
        tags=_tags(data.get("tags") or []),
        published_at=_time(when) if when is not None else None,
        raw=data,
    )


def _id(value: object) -> str:
    stream_key(_str(value))  # raises ValueError unless it is a stream id
    return _str(value)


def _str(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _opt(value: object) -> str | None:
    return None if value is None else _str(value)


def _tags(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise TypeError("tags must be a list")
    return tuple(_str(tag) for tag in value)


def _time(value: object) -> datetime:
    # Python 3.11's fromisoformat reads the server's "...T10:00:00.123Z".
    return datetime.fromisoformat(_str(value))
