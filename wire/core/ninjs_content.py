"""ninjs 3.x for the newsroom fields: byline, dateline, language, subjects, pictures...

The other half of :mod:`wire.core.ninjs` (which maps guid, headlines, body,
tags, link, urgency and embargo): pure functions, no I/O. The mapping table is
in docs/ninjs.md. The IPTC ninjs 3.x schema is closed (no property outside its
list), so the facts only the wire has go where ninjs allows them: the mark,
a correction and an advisory are ``genres`` with ``wire:`` URIs, a translation
is an association with ``rel`` ``translationOf``. Properties of an incoming
document that the wire does not model are kept verbatim in the item's
``extra`` and come back out as they came in.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

from wire.core.content import ASSOCIATION_TYPES
from wire.core.errors import ValidationError

MEDTOP_URI = "http://cv.iptc.org/newscodes/mediatopic/"
MEDTOP = "medtop:"
MARK_GENRE = "wire:mark:"
CORRECTION_GENRE = "wire:correction"
ADVISORY_GENRE = "wire:type:advisory"
TRANSLATION_REL = "translationOf"
TAG_PREFIX = "wire:tag:"
#: ninjs properties the wire reads itself (or sets, like version): never in ``extra``.
MAPPED = frozenset(
    {
        "uri", "type", "version", "versionCreated", "firstCreated", "pubStatus",
        "embargoedUntil", "urgency", "headlines", "bodies", "subjects", "edNote",
        "language", "by", "slugline", "located", "descriptions", "copyrightNotice",
        "usageTerms", "people", "places", "organisations", "wire:mark", "wire:versions",
        "wire:older", "renditions",
    }
)  # fmt: skip
#: Names ``extra`` may not hold (in the JSON API either): the properties the
#: wire writes itself, which an ingested document's extra never has. There
#: they would go out in ninjs as the wire's word (a firstCreated of the
#: editor's choosing). ``uri`` and ``type`` are kept there by ingest itself.
RESERVED = MAPPED - {"uri", "type"}
#: The JSON type of each ninjs 3.x top-level property the wire does not set
#: itself: ``extra`` goes out at the top level of ninjs, so it may hold only
#: these (of this type) or another provider's ``prefix:name``, else every
#: ninjs read of the item would be invalid against the IPTC schema.
NINJS_EXTRA_TYPES: dict[str, type] = {
    "uri": str, "type": str, "representationType": str, "profile": str,
    "contentCreated": str, "copyrightHolder": str, "title": str, "expires": str,
    "events": list, "plannedCoverage": list, "objects": list, "infoSources": list,
    "associations": list, "altIds": list, "trustIndicators": list, "genres": list,
    "eventDetails": dict, "standard": dict, "rightsInfo": dict, "digitalSourceType": dict,
}  # fmt: skip
#: Another provider's extension property (the schema's patternProperties).
_NAMESPACED = re.compile(r"(?!wire:)[A-Za-z][A-Za-z0-9._-]*:[A-Za-z][A-Za-z0-9._-]*")
#: A property name ``extra`` keeps: ninjs-style, 1-100 characters.
_EXTRA_NAME = re.compile(r"[A-Za-z][A-Za-z0-9._:-]{0,99}")
#: Array properties the wire writes some members of: the members it does not
#: model are kept in ``extra`` under the same name and appended on output.
SHARED = ("associations", "genres", "altIds")
SUMMARY_ROLES = ("summary", None, "text", "description", "abstract")
#: The top-level arrays ingest reads members of (headlines, bodies, subjects
#: and renditions are checked in wire.core.ninjs).
ARRAYS = ("genres", "altIds", "associations", "descriptions", "people", "places", "organisations")
_URI_SAFE = "!#$%&'()*+,-./:;=?@[]_~"
_PLAIN = ("", "text/plain")


def extra_name_ok(name: object) -> bool:
    """True for a name ``extra`` may keep: 1-100 letters, digits and ``. _ : -``,
    starting with a letter (not ``$schema`` or ``@context``)."""
    return isinstance(name, str) and _EXTRA_NAME.fullmatch(name) is not None


def extra_fits_ninjs(name: str, value: object) -> bool:
    """True when ninjs 3.x can carry ``name: value`` at its top level: a
    namespaced ``prefix:name`` (any JSON), or a ninjs property of its type."""
    if _NAMESPACED.fullmatch(name):
        return True
    kind = NINJS_EXTRA_TYPES.get(name)
    return kind is not None and isinstance(value, kind)


def genre_uri(mark: str) -> str:
    """``wire:mark:<mark>``, percent-encoded so that every mark makes a valid URI."""
    return MARK_GENRE + quote(mark, safe="-")


def content_to_ninjs(
    doc: dict[str, Any], item: Mapping[str, Any], uri_for: Callable[[str], str]
) -> None:
    """Add the newsroom fields of a stored ``item`` to its ninjs ``doc``.

    ``uri_for`` is the guid-to-uri rule of :mod:`wire.core.ninjs` (for a translation's original).
    """
    for ninjs_name, name in (("by", "byline"), ("slugline", "slugline"), ("located", "located")):
        if item.get(name):
            doc[ninjs_name] = item[name]
    if item.get("language"):
        doc["language"] = item["language"]
    if item.get("summary"):
        doc["descriptions"] = [
            {"role": "summary", "contentType": "text/plain", "value": item["summary"]}
        ]
    for ninjs_name, name in (
        ("edNote", "ednote"),
        ("copyrightNotice", "copyright"),
        ("usageTerms", "usage_terms"),
    ):
        if item.get(name):
            doc[ninjs_name] = item[name]
    genres = _genres(item)
    if genres:
        doc["genres"] = genres
    _entities(doc, item)
    associations = [_association_out(a, n) for n, a in enumerate(item.get("associations") or [])]
    if item.get("translation_of"):
        original = uri_for(item["translation_of"])
        associations.append({"name": "original", "rel": TRANSLATION_REL, "uri": original})
    if associations:
        doc["associations"] = associations


def _genres(item: Mapping[str, Any]) -> list[dict[str, str]]:
    genres = []
    if item.get("mark"):
        genres.append({"name": item["mark"], "uri": genre_uri(item["mark"])})
    if item.get("correction"):
        genres.append({"name": "correction", "uri": CORRECTION_GENRE})
    if item.get("type") == "advisory":
        genres.append({"name": "advisory", "uri": ADVISORY_GENRE})
    return genres


def _entities(doc: dict[str, Any], item: Mapping[str, Any]) -> None:
    subjects = [
        _compact({"name": s.get("name"), "uri": subject_uri(s["code"])})
        for s in item.get("subjects") or []
    ]
    if subjects:
        doc["subjects"] = [*doc.get("subjects", []), *subjects]
    for name in ("people", "places", "organisations"):
        if item.get(name):
            doc[name] = [_compact({"name": e["name"], "uri": e.get("uri")}) for e in item[name]]


def subject_uri(code: str) -> str:
    """A subject code as a ninjs uri: ``medtop:X`` is the IPTC Media Topic URI."""
    if code.startswith(MEDTOP):
        return MEDTOP_URI + code[len(MEDTOP) :]
    return code


def _association_out(a: Mapping[str, Any], n: int) -> dict[str, Any]:
    out: dict[str, Any] = {"name": f"{a['type']}{n + 1}", "uri": a["uri"], "type": a["type"]}
    if a.get("headline"):
        out["headlines"] = [{"role": "main", "value": a["headline"]}]
    descriptions = [
        {"role": role, "contentType": "text/plain", "value": a[role]}
        for role in ("caption", "alt")
        if a.get(role)
    ]
    if descriptions:
        out["descriptions"] = descriptions
    if a.get("credit"):
        out["by"] = a["credit"]
    out["renditions"] = [
        _compact(
            {
                "name": r["name"],
                "href": quote(r["href"], safe=_URI_SAFE),
                "contentType": r.get("contenttype"),
                "width": r.get("width"),
                "height": r.get("height"),
            }
        )
        for r in a["renditions"]
    ]
    return out


def extra_to_ninjs(doc: dict[str, Any], item: Mapping[str, Any]) -> None:
    """Return the properties kept in ``extra`` to ``doc`` as they came in.

    The wire's own properties win; in :data:`SHARED` arrays the kept members
    follow the wire's; a kept ``type`` (``picture``, ``composite``...) is the
    document's type unless the item is an advisory.
    """
    for name, value in (item.get("extra") or {}).items():
        if name in SHARED and isinstance(value, list):
            doc[name] = [*doc.get(name, []), *value]
        elif name == "type" and item.get("type", "text") == "text" and isinstance(value, str):
            doc["type"] = value
        else:
            doc.setdefault(name, value)


def _compact(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if v is not None}


# -- ingest ------------------------------------------------------------------------


def content_from_ninjs(doc: Mapping[str, Any], guid_for: Callable[[str], str]) -> dict[str, Any]:
    """The newsroom fields of an incoming ninjs document, for ``parse_submission``.

    ``guid_for`` is the uri-to-guid rule of :mod:`wire.core.ninjs` (for a translation's original).
    Shapes the wire reads but cannot use (an ``http`` uri where a code goes, a
    person with no name) are left to the validator, which names the field; a
    member the model has no room for (a ``composite`` association, a
    rendition with no ``href``) goes to ``extra``.
    """
    # A name extra cannot keep (``$schema``) is dropped, as docs/ninjs.md says.
    extra: dict[str, Any] = {
        k: v for k, v in doc.items() if k not in MAPPED and k not in SHARED and extra_name_ok(k)
    }
    arrays = {name: _array(doc, name) for name in ARRAYS}
    genres = [g for g in arrays["genres"] if isinstance(g, dict)]
    wire_genres = {g.get("uri") for g in genres}
    data: dict[str, Any] = {
        "language": doc.get("language"),
        "type": "advisory" if ADVISORY_GENRE in wire_genres else None,
        "byline": doc.get("by"),
        "slugline": doc.get("slugline"),
        "located": doc.get("located"),
        "summary": _summary(_descriptions(arrays["descriptions"])),
        "ednote": doc.get("edNote"),
        "copyright": doc.get("copyrightNotice"),
        "usage_terms": doc.get("usageTerms"),
        "correction": True if CORRECTION_GENRE in wire_genres else None,
        "subjects": _subjects(doc.get("subjects")) or None,
        "people": _people(arrays["people"]),
        "places": _people(arrays["places"]),
        "organisations": _people(arrays["organisations"]),
    }
    if isinstance(doc.get("type"), str) and doc["type"] != "text":
        extra["type"] = doc["type"]
    _keep(extra, "genres", [g for g in genres if not _is_wire(g.get("uri"))])
    _keep(extra, "altIds", [a for a in arrays["altIds"] if not _wire_id(a)])
    associations, kept = _associations(arrays["associations"])
    translation = [a for a in kept if isinstance(a, dict) and a.get("rel") == TRANSLATION_REL]
    if translation and isinstance(translation[0].get("uri"), str):
        data["translation_of"] = guid_for(translation[0]["uri"])
        kept = [a for a in kept if a is not translation[0]]
    data["associations"] = associations or None
    _keep(extra, "associations", kept)
    data["extra"] = extra or None
    return {k: v for k, v in data.items() if v is not None}


def _array(doc: Mapping[str, Any], name: str) -> list[Any]:
    """A top-level array the wire reads: absent or null is empty, another type a 400.

    Dropped silently, a ``"people": "Jane Doe"`` was a 201 that lost the people.
    """
    value = doc.get(name)
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValidationError(f"{name} must be an array", field=name)
    return value


def _descriptions(members: list[Any]) -> list[Any]:
    """``descriptions``, whose members' role, value and contentType are strings
    (as for headlines and bodies): a summary of another type is a 400, not lost."""
    for m in members:
        for key in ("role", "value", "contentType"):
            if isinstance(m, dict) and m.get(key) is not None and not isinstance(m[key], str):
                message = f"descriptions[].{key} must be a string"
                raise ValidationError(message, field="descriptions")
    return members


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _keep(extra: dict[str, Any], name: str, members: list[Any]) -> None:
    if members:
        extra[name] = members


def _is_wire(uri: object) -> bool:
    return isinstance(uri, str) and uri.startswith("wire:")


def _wire_id(alt: object) -> bool:
    return isinstance(alt, dict) and alt.get("role") == "wire:id"


def _text_of(members: object, roles: tuple[str | None, ...]) -> str | None:
    """The value of the first plain-text member whose role is in ``roles``, by role order."""
    plain = [
        m
        for m in _list(members)
        if isinstance(m, dict)
        and str(m.get("contentType") or "").lower() in _PLAIN
        and isinstance(m.get("value"), str)
    ]
    for role in roles:
        for m in plain:
            if m.get("role") == role:
                return str(m["value"])
    return None


def _summary(descriptions: object) -> str | None:
    return _text_of(descriptions, SUMMARY_ROLES)


def _subjects(value: object) -> list[dict[str, Any]]:
    """Subjects with a uri that is not a wire tag: ``{"code", "name"?}``."""
    out = []
    for s in _list(value):
        if not isinstance(s, dict) or not isinstance(s.get("uri"), str):
            continue
        uri = s["uri"]
        if uri.startswith(TAG_PREFIX):
            continue
        code = MEDTOP + uri[len(MEDTOP_URI) :] if uri.startswith(MEDTOP_URI) else uri
        out.append(_compact({"code": code, "name": s.get("name")}))
    return out


def _people(value: object) -> list[dict[str, Any]] | None:
    """People, places or organisations as ``{"name", "uri"?}`` (``literal`` if no name)."""
    out = []
    for e in _list(value):
        if isinstance(e, dict) and (e.get("name") or e.get("literal")):
            out.append(_compact({"name": e.get("name") or e.get("literal"), "uri": e.get("uri")}))
    return out or None


def _associations(value: object) -> tuple[list[dict[str, Any]], list[Any]]:
    """(media items the model holds, members kept verbatim for ``extra``)."""
    modelled, kept = [], []
    for a in _list(value):
        media = _media(a) if isinstance(a, dict) else None
        if media is None:
            kept.append(a)
        else:
            modelled.append(media)
    return modelled, kept


def _media(a: dict[str, Any]) -> dict[str, Any] | None:
    uri = a.get("uri")
    if a.get("type") not in ASSOCIATION_TYPES or a.get("rel") == TRANSLATION_REL:
        return None
    if not isinstance(uri, str) or not uri.lower().startswith(("http://", "https://")):
        return None
    renditions = [
        _compact(
            {
                "name": r.get("name"),
                "href": r["href"],
                "width": r.get("width"),
                "height": r.get("height"),
                "contenttype": r.get("contentType"),
            }
        )
        for r in _list(a.get("renditions"))
        if isinstance(r, dict) and isinstance(r.get("href"), str)
    ]
    if not renditions:
        return None
    headlines = [h for h in _list(a.get("headlines")) if isinstance(h, dict)]
    headline = _text_of(headlines, ("main", None)) or _text_of(
        headlines, tuple(h.get("role") for h in headlines)
    )
    return _compact(
        {
            "type": a["type"],
            "uri": uri,
            "headline": headline,
            "caption": _text_of(a.get("descriptions"), ("caption", None, "text", "description")),
            "alt": _text_of(a.get("descriptions"), ("alt",)),
            "credit": a.get("by"),
            "renditions": renditions,
        }
    )
