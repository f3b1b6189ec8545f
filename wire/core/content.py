"""What a story is about and what goes with it: subjects, entities, media associations.

Pure value objects and their validators, used by :mod:`wire.core.items`.
Every error names the field by its path (``associations[0].renditions[1].href``).
The JSON shapes and limits are in docs/protocol.md ("Item fields").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from wire.core.errors import ValidationError, quoted
from wire.core.links import check_url
from wire.core.text import check_text

MAX_SUBJECTS = 20
MAX_ENTITIES = 20
MAX_ASSOCIATIONS = 10
MAX_RENDITIONS = 10
MAX_NAME = 200
MAX_HEADLINE = 300
MAX_CAPTION = 2_000
MAX_CREDIT = 200
MAX_ALT = 1_000
MAX_RENDITION_NAME = 100
MAX_PIXELS = 100_000
ASSOCIATION_TYPES = ("picture", "video", "audio", "graphic")
#: ``scheme:code``, like ``medtop:20000051`` or ``wikidata:Q42``: URI characters
#: only, so the code is also a valid URI in ninjs.
_CODE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]{0,31}:[A-Za-z0-9._~:@+=/%!$&'()*,;?#-]{1,200}")
_UNSAFE_SCHEMES = frozenset(
    {"javascript", "vbscript", "data", "file", "blob", "about", "filesystem", "view-source"}
)
_CONTENT_TYPE = re.compile(
    r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,63}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,63}"
)


@dataclass(frozen=True, slots=True)
class Subject:
    """A subject code (``medtop:20000051``), with its name when given."""

    code: str
    name: str | None = None

    def json(self) -> dict[str, Any]:
        """The subject's JSON object (``name`` omitted when absent)."""
        return _compact({"code": self.code, "name": self.name})


@dataclass(frozen=True, slots=True)
class Entity:
    """A person, place or organisation the story is about or mentions."""

    name: str
    uri: str | None = None

    def json(self) -> dict[str, Any]:
        """The entity's JSON object (``uri`` omitted when absent)."""
        return _compact({"name": self.name, "uri": self.uri})


@dataclass(frozen=True, slots=True)
class Rendition:
    """One file of a media item: a size or format of a picture, a video..."""

    name: str
    href: str
    width: int | None = None
    height: int | None = None
    contenttype: str | None = None

    def json(self) -> dict[str, Any]:
        """The rendition's JSON object, absent members omitted."""
        return _compact(
            {
                "name": self.name,
                "href": self.href,
                "width": self.width,
                "height": self.height,
                "contenttype": self.contenttype,
            }
        )


@dataclass(frozen=True, slots=True)
class Association:
    """A picture, video, audio or graphic that goes with the story."""

    type: str
    uri: str
    renditions: tuple[Rendition, ...]
    headline: str | None = None
    caption: str | None = None
    credit: str | None = None
    alt: str | None = None

    def json(self) -> dict[str, Any]:
        """The association's JSON object, absent members omitted."""
        return _compact(
            {
                "type": self.type,
                "uri": self.uri,
                "headline": self.headline,
                "caption": self.caption,
                "credit": self.credit,
                "alt": self.alt,
                "renditions": [r.json() for r in self.renditions],
            }
        )


def _compact(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if v is not None}


def check_code(value: object, name: str, *, required: bool = True) -> str | None:
    """A ``scheme:code`` identifier, or an http(s) URL (the URL rules apply).

    Clients may show a code as a link, so the schemes a browser would run or
    read locally (``javascript:``, ``data:``, ``file:``...) and any other
    ``scheme://`` form than http(s) are refused.
    """
    if value is None:
        if required:
            raise ValidationError(
                f"{name} is required: scheme:code like medtop:20000051", field=name
            )
        return None
    if not isinstance(value, str):
        raise ValidationError(f"{name} must be a string like medtop:20000051", field=name)
    value = value.strip()
    if value[:7].lower() == "http://" or value[:8].lower() == "https://":
        return check_url(value, name)
    scheme, _, rest = value.partition(":")
    if not _CODE.fullmatch(value) or scheme.lower() in _UNSAFE_SCHEMES or rest.startswith("/"):
        raise ValidationError(
            f"{name} must be scheme:code (like medtop:20000051) or an http(s) URL", field=name
        )
    return value


def _members(value: object, name: str, limit: int, keys: tuple[str, ...]) -> list[dict[str, Any]]:
    """A list of at most ``limit`` objects with no member outside ``keys``."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ValidationError(f"{name} must be a list of objects", field=name)
    if len(value) > limit:
        raise ValidationError(f"at most {limit} {name} per item", field=name)
    for i, member in enumerate(value):
        for key in member:
            if key not in keys:
                raise ValidationError(f"unknown field {quoted(key)}", field=f"{name}[{i}].{key}")
    return value


def parse_subjects(value: object) -> tuple[Subject, ...]:
    """``subjects``: up to 20 ``{"code", "name"?}``."""
    out = []
    for i, s in enumerate(_members(value, "subjects", MAX_SUBJECTS, ("code", "name"))):
        path = f"subjects[{i}]"
        code = check_code(s.get("code"), f"{path}.code") or ""
        name = check_text(s.get("name"), f"{path}.name", MAX_NAME, multiline=False)
        out.append(Subject(code, name))
    return tuple(out)


def parse_entities(value: object, field: str) -> tuple[Entity, ...]:
    """``people``, ``places`` or ``organisations``: up to 20 ``{"name", "uri"?}``."""
    out = []
    for i, e in enumerate(_members(value, field, MAX_ENTITIES, ("name", "uri"))):
        path = f"{field}[{i}]"
        name = check_text(e.get("name"), f"{path}.name", MAX_NAME, required=True, multiline=False)
        uri = check_code(e.get("uri"), f"{path}.uri", required=False)
        out.append(Entity(name or "", uri))
    return tuple(out)


_ASSOCIATION_KEYS = ("type", "uri", "headline", "caption", "credit", "alt", "renditions")
_RENDITION_KEYS = ("name", "href", "width", "height", "contenttype")


def parse_associations(value: object) -> tuple[Association, ...]:
    """``associations``: up to 10 media items, each with 1 to 10 renditions."""
    members = _members(value, "associations", MAX_ASSOCIATIONS, _ASSOCIATION_KEYS)
    return tuple(_association(a, f"associations[{i}]") for i, a in enumerate(members))


def _association(a: dict[str, Any], path: str) -> Association:
    kind = a.get("type")
    if kind not in ASSOCIATION_TYPES:
        raise ValidationError(
            f"{path}.type must be one of {', '.join(ASSOCIATION_TYPES)}", field=f"{path}.type"
        )
    uri = check_url(a.get("uri"), f"{path}.uri")
    if uri is None:
        raise ValidationError(f"{path}.uri is required", field=f"{path}.uri")
    renditions = _members(
        a.get("renditions"), f"{path}.renditions", MAX_RENDITIONS, _RENDITION_KEYS
    )
    if not renditions:
        raise ValidationError(
            f"{path}.renditions is required: 1 to {MAX_RENDITIONS} renditions",
            field=f"{path}.renditions",
        )
    return Association(
        type=str(kind),
        uri=uri,
        renditions=tuple(
            _rendition(r, f"{path}.renditions[{i}]") for i, r in enumerate(renditions)
        ),
        headline=check_text(a.get("headline"), f"{path}.headline", MAX_HEADLINE, multiline=False),
        caption=check_text(a.get("caption"), f"{path}.caption", MAX_CAPTION),
        credit=check_text(a.get("credit"), f"{path}.credit", MAX_CREDIT, multiline=False),
        alt=check_text(a.get("alt"), f"{path}.alt", MAX_ALT, multiline=False),
    )


def _rendition(r: dict[str, Any], path: str) -> Rendition:
    name = check_text(
        r.get("name"), f"{path}.name", MAX_RENDITION_NAME, required=True, multiline=False
    )
    href = check_url(r.get("href"), f"{path}.href")
    if href is None:
        raise ValidationError(f"{path}.href is required", field=f"{path}.href")
    ctype = r.get("contenttype")
    if ctype is not None and not (isinstance(ctype, str) and _CONTENT_TYPE.fullmatch(ctype)):
        raise ValidationError(
            f"{path}.contenttype must be a media type like image/jpeg", field=f"{path}.contenttype"
        )
    return Rendition(
        name=name or "",
        href=href,
        width=_pixels(r.get("width"), f"{path}.width"),
        height=_pixels(r.get("height"), f"{path}.height"),
        contenttype=ctype.lower() if isinstance(ctype, str) else None,
    )


def _pixels(value: object, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_PIXELS:
        raise ValidationError(f"{name} must be an integer from 1 to {MAX_PIXELS:,}", field=name)
    return value
