"""The item model and its validator: the one door through which news enters.

:func:`parse_submission` turns an editor's JSON object into a
:class:`Submission` or raises a :class:`~wire.errors.ValidationError` naming
the field. Nothing else builds a Submission, so code past this boundary
(store, gateway) trusts it. The stored form adds ``id``, ``version`` and
``published_at``, set by the server; its layout is :mod:`wire.core.stored`'s.
Text rules live in :mod:`wire.core.text`, link rules in :mod:`wire.core.links`,
subjects, entities and pictures in :mod:`wire.core.content`, languages in
:mod:`wire.core.language`.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from wire.core import stored
from wire.core.content import (
    Association,
    Entity,
    Subject,
    parse_associations,
    parse_entities,
    parse_subjects,
)
from wire.core.errors import ValidationError, quoted
from wire.core.language import DEFAULT_LANGUAGE, normalize_language
from wire.core.links import MAX_URL, check_url
from wire.core.ninjs_content import RESERVED, extra_fits_ninjs, extra_name_ok
from wire.core.stored import iso as iso  # re-exported: callers know the time format here
from wire.core.stored import published_now as published_now  # re-exported too
from wire.core.tags import normalize_tags
from wire.core.text import BIDI_CONTROLS, MAX_MARKS, check_text

__all__ = ["BIDI_CONTROLS", "MAX_MARKS", "MAX_URL", "Submission", "check_text", "parse_submission"]

MAX_TITLE = 300
MAX_SUBTITLE = 1_000
MAX_BODY = 100_000
MAX_MARK = 40
MAX_TAGS = 20
DEFAULT_URGENCY = 5
MAX_BYLINE = 200
MAX_SLUGLINE = 64
MAX_LOCATED = 100
MAX_SUMMARY = 2_000
MAX_EDNOTE = 1_000
MAX_COPYRIGHT = 500
MAX_USAGE_TERMS = 500
#: Serialized size (UTF-8 bytes of compact JSON) of ``extra``.
MAX_EXTRA = 16 * 1024
#: How deeply ``extra`` may nest arrays and objects. orjson writes at most 254
#: levels, and a story read in ninjs puts an item's extra three levels down:
#: 300 levels fit in 16 KiB, and such an item could never be stored or read.
MAX_EXTRA_DEPTH = 64
TYPES = ("text", "advisory")
#: The mark of a correction that names none (a re-publish defaults to "Updated").
CORRECTED = "Corrected"

CONTENT_FIELDS = (
    "language", "type", "byline", "slugline", "located", "summary", "ednote", "copyright",
    "usage_terms", "translation_of", "correction", "subjects", "people", "places",
    "organisations", "associations", "extra",
)  # fmt: skip
FIELDS = (
    "title", "subtitle", "body", "tags", "mark", "url", "urgency", "guid", "embargo_until",
    *CONTENT_FIELDS,
)  # fmt: skip
SERVER_FIELDS = ("id", "version", "published_at", "pubstatus")
MAX_EMBARGO_DAYS = 366
#: Characters an idempotency key may have (header or batch field).
MAX_KEY = 255
_GUID = re.compile(r"[A-Za-z0-9._~:@+=-]{1,200}")
_SLUGLINE = re.compile(r"[^\W_]+(?:-+[^\W_]+)*")


@dataclass(frozen=True, slots=True)
class Submission:
    """A validated item as an editor sent it, before the store numbers it."""

    title: str
    tags: tuple[str, ...]
    guid: str
    subtitle: str | None = None
    body: str | None = None
    mark: str | None = None
    url: str | None = None
    urgency: int = DEFAULT_URGENCY
    #: When set, the item stays invisible until then (see Store.embargo).
    embargo_until: datetime | None = None
    language: str = DEFAULT_LANGUAGE
    type: str = "text"
    byline: str | None = None
    slugline: str | None = None
    located: str | None = None
    summary: str | None = None
    ednote: str | None = None
    copyright: str | None = None
    usage_terms: str | None = None
    translation_of: str | None = None
    correction: bool = False
    subjects: tuple[Subject, ...] = ()
    people: tuple[Entity, ...] = ()
    places: tuple[Entity, ...] = ()
    organisations: tuple[Entity, ...] = ()
    associations: tuple[Association, ...] = ()
    #: Properties of an ingested document the wire does not model, as compact
    #: JSON text (a string, so the submission stays immutable).
    extra: str | None = None

    def content(self) -> dict[str, Any]:
        """The JSON of the newsroom fields, in a fixed order.

        ``language`` and ``type`` are always there; every other field only
        when set (docs/protocol.md, "Item fields").
        """
        data: dict[str, Any] = {"language": self.language, "type": self.type}
        for name in ("byline", "slugline", "located", "summary", "ednote", "copyright"):
            if getattr(self, name) is not None:
                data[name] = getattr(self, name)
        if self.usage_terms is not None:
            data["usage_terms"] = self.usage_terms
        if self.translation_of is not None:
            data["translation_of"] = self.translation_of
        if self.correction:
            data["correction"] = True
        for name in ("subjects", "people", "places", "organisations", "associations"):
            if getattr(self, name):
                data[name] = [member.json() for member in getattr(self, name)]
        if self.extra is not None:
            data["extra"] = json.loads(self.extra)
        return data

    def pending(self) -> dict[str, Any]:
        """The JSON of an accepted embargoed item: no id or version until release."""
        return stored.pending(self)

    def released(self) -> Submission:
        """The same item without its embargo, as published when it falls due."""
        return replace(self, embargo_until=None)


def idempotency_key_ok(key: str) -> bool:
    """An idempotency key is 1-255 visible ASCII characters."""
    return 1 <= len(key) <= MAX_KEY and all(33 <= ord(c) < 127 for c in key)


def new_guid() -> str:
    """A fresh story id for items whose editor did not choose one."""
    return "urn:wire:" + secrets.token_hex(12)


def parse_submission(
    data: object, *, now: datetime | None = None, default_language: str = DEFAULT_LANGUAGE
) -> Submission:
    """Validate an editor's JSON object; raise ValidationError naming the field.

    ``now`` is when the request arrived; an ``embargo_until`` must be after it.
    ``default_language`` (the server's ``WIRE_DEFAULT_LANGUAGE``) is the
    language of an item that names none.
    """
    if not isinstance(data, dict):
        raise ValidationError("the request body must be a JSON object")
    for name in data:
        if name in SERVER_FIELDS:
            raise ValidationError(f"{name} is set by the server", field=name)
        if name not in FIELDS:
            raise ValidationError(f"unknown field {quoted(name)}", field=str(name))
    # Each field is checked in this order (an item with several errors is
    # told about the first), and the frozen Submission is built once:
    # ``dataclasses.replace`` cost a tenth of a POST's validation.
    title = _text(data, "title", MAX_TITLE, required=True, multiline=False) or ""
    subtitle = _text(data, "subtitle", MAX_SUBTITLE)
    body = _text(data, "body", MAX_BODY)
    mark = _text(data, "mark", MAX_MARK, multiline=False)
    tags = _tags(data.get("tags"))
    url = check_url(data.get("url"))
    urgency = _urgency(data.get("urgency"))
    guid = _guid(data.get("guid"))
    embargo_until = _embargo(data.get("embargo_until"), now or datetime.now(UTC))
    return Submission(
        title=title,
        tags=tags,
        guid=guid,
        subtitle=subtitle,
        body=body,
        url=url,
        urgency=urgency,
        embargo_until=embargo_until,
        **_content(data, mark, guid, default_language),
    )


def _content(
    data: dict[str, Any], mark: str | None, guid: str, default_language: str
) -> dict[str, Any]:
    """The newsroom fields of ``data`` (see :meth:`Submission.content`), and the mark."""
    language = data.get("language")
    correction = _correction(data.get("correction"))
    translation_of = data.get("translation_of")
    return {
        "language": normalize_language(default_language if language is None else language),
        "type": _type(data.get("type")),
        "byline": _text(data, "byline", MAX_BYLINE, multiline=False),
        "slugline": _slugline(data.get("slugline")),
        "located": _text(data, "located", MAX_LOCATED, multiline=False),
        "summary": _text(data, "summary", MAX_SUMMARY),
        "ednote": _text(data, "ednote", MAX_EDNOTE),
        "copyright": _text(data, "copyright", MAX_COPYRIGHT, multiline=False),
        "usage_terms": _text(data, "usage_terms", MAX_USAGE_TERMS),
        "translation_of": _translation_of(translation_of, guid),
        "correction": correction,
        "mark": mark or (CORRECTED if correction else None),
        "subjects": parse_subjects(data.get("subjects")),
        "people": parse_entities(data.get("people"), "people"),
        "places": parse_entities(data.get("places"), "places"),
        "organisations": parse_entities(data.get("organisations"), "organisations"),
        "associations": parse_associations(data.get("associations")),
        "extra": _extra(data.get("extra")),
    }


def _text(
    data: dict[str, Any], name: str, limit: int, *, required: bool = False, multiline: bool = True
) -> str | None:
    return check_text(
        data.get(name), name, limit, required=required, multiline=multiline, bidi=name == "body"
    )


def _tags(value: object) -> tuple[str, ...]:
    if value is None:
        raise ValidationError("tags is required: 1 to 20 tags", field="tags")
    if not isinstance(value, list) or not value:
        raise ValidationError("tags must be a non-empty list of strings", field="tags")
    tags = normalize_tags(value)
    if len(tags) > MAX_TAGS:
        raise ValidationError(f"at most {MAX_TAGS} tags per item", field="tags")
    return tags


def _urgency(value: object) -> int:
    if value is None:
        return DEFAULT_URGENCY
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 9:
        raise ValidationError("urgency must be an integer from 1 (flash) to 9", field="urgency")
    return value


def _embargo(value: object, now: datetime) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValidationError("embargo_until must be an ISO 8601 string", field="embargo_until")
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValidationError(
            "embargo_until must be ISO 8601, like 2024-06-01T12:00:00Z", field="embargo_until"
        ) from None
    if moment.tzinfo is None:
        raise ValidationError("embargo_until needs a timezone (Z or +hh:mm)", field="embargo_until")
    if moment <= now:
        raise ValidationError("embargo_until must be in the future", field="embargo_until")
    if (moment - now).days > MAX_EMBARGO_DAYS:
        raise ValidationError("embargo_until is more than a year ahead", field="embargo_until")
    return moment


def _guid(value: object, name: str = "guid") -> str:
    if value is None:
        return new_guid()
    if not isinstance(value, str) or not _GUID.fullmatch(value):
        raise ValidationError(
            f"{name} must be 1-200 characters of letters, digits and . _ ~ : @ + = -",
            field=name,
        )
    return value


def _translation_of(value: object, guid: str) -> str | None:
    """The guid of the story this one translates: its shape here, its existence in the store."""
    if value is None:
        return None
    original = _guid(value, "translation_of")
    if original == guid:
        raise ValidationError("translation_of must name another story", field="translation_of")
    return original


def _type(value: object) -> str:
    if value is None:
        return "text"
    if value not in TYPES:
        raise ValidationError("type must be text or advisory", field="type")
    return str(value)


def _correction(value: object) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ValidationError("correction must be true or false", field="correction")
    return value


def _slugline(value: object) -> str | None:
    slug = check_text(value, "slugline", MAX_SLUGLINE, multiline=False)
    if slug is not None and not _SLUGLINE.fullmatch(slug):
        raise ValidationError(
            "slugline must be letters, digits and - (like QUAKE-JAPAN)", field="slugline"
        )
    return slug


def _extra(value: object) -> str | None:
    """Properties the wire does not model, kept verbatim (a JSON object up to 16 KiB)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValidationError("extra must be a JSON object", field="extra")
    for key, member in value.items():
        _extra_member(key, member)
    if not value:
        return None
    if _depth(value) > MAX_EXTRA_DEPTH:
        raise ValidationError(
            f"extra is nested deeper than {MAX_EXTRA_DEPTH} levels of arrays and objects",
            field="extra",
        )
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (ValueError, TypeError, RecursionError):
        raise ValidationError("extra must be plain JSON", field="extra") from None
    if len(text.encode()) > MAX_EXTRA:
        raise ValidationError(f"extra is larger than {MAX_EXTRA:,} bytes of JSON", field="extra")
    return text


def _extra_member(key: str, member: object) -> None:
    """One property of ``extra``: it goes out at the top level of ninjs."""
    if not extra_name_ok(key):
        raise ValidationError(
            f"extra has a property name {quoted(key[:80])} that is not a ninjs-style name",
            field="extra",
        )
    if key in RESERVED or key.startswith("wire:"):
        # It would go out in ninjs as the wire's own word (see RESERVED).
        raise ValidationError(
            f"extra may not hold {quoted(key)}: the wire sets that ninjs property itself",
            field="extra",
        )
    if not extra_fits_ninjs(key, member):
        raise ValidationError(
            f"extra holds {quoted(key)}, which ninjs 3.x cannot carry: not a ninjs"
            " property of that type, nor another provider's prefix:name",
            field="extra",
        )


def _depth(value: object) -> int:
    """How many levels of arrays and objects ``value`` nests (a scalar: 0).

    Without recursion: the body may nest 1,024 levels (orjson's limit on input).
    """
    deepest, todo = 0, [(value, 0)]
    while todo:
        node, depth = todo.pop()
        if isinstance(node, dict):
            node = list(node.values())
        if isinstance(node, list):
            deepest = max(deepest, depth + 1)
            todo.extend((child, depth + 1) for child in node)
    return deepest
