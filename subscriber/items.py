"""What a feed yields: news items and withdrawals, as frozen dataclasses.

Both arrive from the server as ``{"type": "item", "item": {...}}``; a
withdrawal (a kill) is told apart by ``"pubstatus": "canceled"``. Fields the
server adds later are kept in ``raw`` and otherwise ignored, so an older
library keeps working against a newer server; fields an older server does
not send take their defaults (``language`` is then ``""``: unknown). A field
of the wrong type raises :class:`ProtocolError`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from subscriber.cursor import stream_key
from subscriber.errors import ProtocolError

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Rendition:
    """One file of a media item: the original, a thumbnail, a size for the web..."""

    name: str
    href: str
    """An http(s) URL."""
    width: int | None = None
    height: int | None = None
    contenttype: str | None = None
    """A MIME type such as ``image/jpeg``."""


@dataclass(frozen=True, slots=True)
class Association:
    """A picture, video, audio or graphic that goes with the story."""

    type: str
    """``picture``, ``video``, ``audio`` or ``graphic``."""
    uri: str
    renditions: tuple[Rendition, ...] = ()
    headline: str | None = None
    caption: str | None = None
    credit: str | None = None
    alt: str | None = None
    """Text that stands for the picture for people who cannot see it."""


@dataclass(frozen=True, slots=True)
class Subject:
    """What the story is about, as ``scheme:code`` (``medtop:20000051``) and a name."""

    code: str
    name: str | None = None


@dataclass(frozen=True, slots=True)
class Entity:
    """A person, place or organisation the story names; ``uri`` identifies it."""

    name: str
    uri: str | None = None


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
    language: str = ""
    """A BCP 47 tag (``en``, ``pt-BR``); ``""`` from a server older than languages."""
    type: str = "text"
    """``text`` (a story) or ``advisory`` (a note to editors, not for publication)."""
    correction: bool = False
    """True on a version that fixes an error (its mark is usually ``Corrected``)."""
    byline: str | None = None
    slugline: str | None = None
    """A short keyword handle for the story, e.g. ``QUAKE-JAPAN``."""
    located: str | None = None
    """The dateline place, e.g. ``TOKYO``."""
    summary: str | None = None
    ednote: str | None = None
    """A note to client editors."""
    copyright: str | None = None
    usage_terms: str | None = None
    translation_of: str | None = None
    """The guid of the story this one translates."""
    subjects: tuple[Subject, ...] = ()
    people: tuple[Entity, ...] = ()
    places: tuple[Entity, ...] = ()
    organisations: tuple[Entity, ...] = ()
    associations: tuple[Association, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)
    """ninjs properties the wire keeps without modelling them."""
    raw: dict[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)
    """The item's JSON exactly as the server sent it."""

    @property
    def is_update(self) -> bool:
        """True for a new version of a story published before (replace it in place)."""
        return self.version > 1

    @property
    def is_advisory(self) -> bool:
        """True for a note to editors rather than a story to publish."""
        return self.type == "advisory"

    @property
    def pictures(self) -> tuple[Association, ...]:
        """The associations that are pictures, in order (the first is the lead picture)."""
        return tuple(a for a in self.associations if a.type == "picture")


@dataclass(frozen=True, slots=True)
class Withdrawal:
    """A story was killed: stop showing every version of ``guid``."""

    id: str
    guid: str
    version: int
    reason: str
    tags: tuple[str, ...]
    published_at: datetime | None = None
    language: str = ""
    """The withdrawn story's language, when the server says it."""
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
        language=_opt(data.get("language")) or "",
        type=_opt(data.get("type")) or "text",
        correction=_bool(data.get("correction", False)),
        **_texts(data),
        subjects=_objects(data, "subjects", _subject),
        people=_objects(data, "people", _entity),
        places=_objects(data, "places", _entity),
        organisations=_objects(data, "organisations", _entity),
        associations=_objects(data, "associations", _association),
        extra=_mapping(data.get("extra")),
        raw=data,
    )


TEXTS = ("byline", "slugline", "located", "summary", "ednote", "copyright", "usage_terms")


def _texts(data: dict[str, Any]) -> dict[str, str | None]:
    texts = {name: _opt(data.get(name)) for name in TEXTS}
    texts["translation_of"] = _opt(data.get("translation_of"))
    return texts


def _objects(
    data: dict[str, Any], name: str, build: Callable[[dict[str, Any]], T]
) -> tuple[T, ...]:
    value = data.get(name)
    if value is None:
        return ()
    if not isinstance(value, list):
        raise TypeError(f"{name} must be a list")
    return tuple(build(_object(entry, name)) for entry in value)


def _object(value: object, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError(f"each of {name} must be an object")
    return value


def _subject(data: dict[str, Any]) -> Subject:
    return Subject(code=_str(data["code"]), name=_opt(data.get("name")))


def _entity(data: dict[str, Any]) -> Entity:
    return Entity(name=_str(data["name"]), uri=_opt(data.get("uri")))


def _association(data: dict[str, Any]) -> Association:
    return Association(
        type=_str(data["type"]),
        uri=_str(data["uri"]),
        renditions=_objects(data, "renditions", _rendition),
        headline=_opt(data.get("headline")),
        caption=_opt(data.get("caption")),
        credit=_opt(data.get("credit")),
        alt=_opt(data.get("alt")),
    )


def _rendition(data: dict[str, Any]) -> Rendition:
    return Rendition(
        name=_str(data["name"]),
        href=_str(data["href"]),
        width=_opt_int(data.get("width")),
        height=_opt_int(data.get("height")),
        contenttype=_opt(data.get("contenttype")),
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
        language=_opt(data.get("language")) or "",
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


def _opt_int(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {type(value).__name__}")
    return value


def _bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected true or false, got {type(value).__name__}")
    return value


def _mapping(value: object) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TypeError(f"extra must be an object, got {type(value).__name__}")
    return value


def _tags(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise TypeError("tags must be a list")
    return tuple(_str(tag) for tag in value)


def _time(value: object) -> datetime:
    # Python 3.11's fromisoformat reads the server's "...T10:00:00.123Z".
    return datetime.fromisoformat(_str(value))
