"""IPTC ninjs 3.x interchange: stored items out as ninjs, ninjs documents in.

Pure functions, no I/O: the publisher routes and ``wire export`` call them.
See ``docs/ninjs.md`` for the mapping table. In short:

* ``uri``: a guid that is already a URI (``scheme:rest``, like the wire's own
  ``urn:wire:<hex>``) is the uri; any other guid ``g`` becomes
  ``urn:wire:story:<g>``. Incoming, ``urn:wire:story:<g>`` is read back as ``g``,
  a uri that fits the guid alphabet is the guid, and any other uri (``http://``
  links contain ``/``, which guids may not) is hashed into a stable guid
  ``urn:wire:ninjs:<sha256 prefix>``, so re-sending the same uri still makes
  new versions of the same story.
* the mark is a ``genres`` member ``{"name": mark, "uri": "wire:mark:<mark>"}``
  (the IPTC schema is closed, so the wire adds no property of its own to an
  item; ``wire:mark`` is still read on input). ``GET /v1/stories/<guid>`` in
  ninjs adds ``wire:versions`` (a page of them) and ``wire:older``. The
  stream id is ``altIds`` role ``wire:id``.
* the newsroom fields (byline, language, subjects, pictures...) and ``extra``
  are mapped by :mod:`wire.core.ninjs_content`.
* tags are ``subjects`` ``{"name": tag, "uri": "wire:tag:<tag>"}`` (the tag
  percent-encoded in the uri, so non-ASCII tags still give a valid URI).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from html.parser import HTMLParser
from typing import Any
from urllib.parse import quote, unquote

from wire.core.errors import ClientError, InvalidTag, ValidationError, quoted
from wire.core.items import _GUID, Submission, parse_submission
from wire.core.language import DEFAULT_LANGUAGE
from wire.core.ninjs_content import (
    MARK_GENRE,
    content_from_ninjs,
    content_to_ninjs,
    extra_to_ninjs,
)
from wire.core.tags import normalize_tag

MEDIA_TYPE = "application/vnd.iptc.ninjs+json"
#: The values of ``?format=`` on item and story reads (json is the default).
FORMATS = ("json", "ninjs")
STORY_PREFIX = "urn:wire:story:"
HASHED_PREFIX = "urn:wire:ninjs:"
TAG_PREFIX = "wire:tag:"
MARK = "wire:mark"
VERSIONS = "wire:versions"
#: A story read's older versions: read them with ``?before=`` this number.
OLDER = "wire:older"
ID_ROLE = "wire:id"
SUB_ROLES = ("subhead", "sub", "subheadline", "subtitle")
#: Extension properties accepted on input (``wire:versions`` and ``wire:older``
#: are read-only, ignored).
_EXTENSIONS_IN = (MARK, VERSIONS, OLDER)
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:\S+")
_URI_SAFE = "!#$%&'()*+,-./:;=?@[]_~"  # RFC 3986 reserved and unreserved, and %
_PLAIN = ("", "text/plain")
_HTML = ("text/html", "application/xhtml+xml")

# Where a validator error on a wire field is reported in ninjs terms.
_NINJS_FIELD = {
    "title": "headlines",
    "subtitle": "headlines",
    "body": "bodies",
    "tags": "subjects",
    "url": "renditions",
    "urgency": "urgency",
    "guid": "uri",
    "embargo_until": "embargoedUntil",
    "mark": MARK,
    "language": "language",
    "type": "genres",
    "correction": "genres",
    "byline": "by",
    "slugline": "slugline",
    "located": "located",
    "summary": "descriptions",
    "ednote": "edNote",
    "copyright": "copyrightNotice",
    "usage_terms": "usageTerms",
    "translation_of": "associations",
    "subjects": "subjects",
    "people": "people",
    "places": "places",
    "organisations": "organisations",
    "associations": "associations",
    "extra": None,
}
_NINJS_PHRASE = {
    "title": 'the main headline (headlines role "main")',
    "subtitle": 'the subhead (headlines role "subhead")',
    "body": "the main body (bodies)",
    "url": 'the "web" rendition href',
    "guid": "uri",
    "embargo_until": "embargoedUntil",
    "mark": MARK,
    "byline": "by",
    "summary": 'the summary (descriptions role "summary")',
    "ednote": "edNote",
    "copyright": "copyrightNotice",
    "usage_terms": "usageTerms",
    "translation_of": 'the uri of the association with rel "translationOf"',
    "extra": "the properties the wire does not model",
}


def wants_ninjs(query: Mapping[str, str]) -> bool:
    """True for ``?format=ninjs``; ``json`` or no format is the wire's JSON."""
    fmt = query.get("format")
    if fmt is None or fmt == "json":
        return False
    if fmt == "ninjs":
        return True
    raise ValidationError(f"format must be json or ninjs, got {quoted(fmt)}", field="format")


def uri_for(guid: str) -> str:
    """The ninjs ``uri`` of a story: the guid itself when it is already a URI."""
    return guid if _URI.fullmatch(guid) else STORY_PREFIX + guid


def tag_uri(tag: str) -> str:
    """``wire:tag:<tag>``, percent-encoded so that non-ASCII tags make a valid URI."""
    return TAG_PREFIX + quote(tag, safe="/-")


def guid_for(uri: str) -> str:
    """The story guid of a ninjs ``uri`` (the inverse of :func:`uri_for`)."""
    if uri.startswith(STORY_PREFIX):
        rest = uri[len(STORY_PREFIX) :]
        if _GUID.fullmatch(rest) and not _URI.fullmatch(rest):
            return rest
    if _GUID.fullmatch(uri):
        return uri
    return HASHED_PREFIX + hashlib.sha256(uri.encode()).hexdigest()[:40]


def first_created(versions: Iterable[Mapping[str, Any]]) -> str | None:
    """``published_at`` of version 1 among a story's stored versions, if kept."""
    for version in versions:
        if version.get("version") == 1:
            value = version.get("published_at")
            return value if isinstance(value, str) else None
    return None


def to_ninjs(item: Mapping[str, Any], first_created: str | None = None) -> dict[str, Any]:
    """A stored item (or withdrawal, stub or pending item) as a ninjs 3.x document.

    A ``canceled`` item never carries headline, body, link or mark, whatever the
    input holds: a withdrawn story's text must not leak through ninjs either.
    """
    doc: dict[str, Any] = {"uri": uri_for(item["guid"]), "type": "text"}
    if item.get("version") is not None:
        doc["version"] = str(item["version"])
    if item.get("published_at"):
        doc["versionCreated"] = item["published_at"]
    if first_created:
        doc["firstCreated"] = first_created
    status = item.get("pubstatus") or "usable"
    doc["pubStatus"] = status
    if item.get("embargo_until"):
        doc["embargoedUntil"] = item["embargo_until"]
    if item.get("urgency") is not None and status != "canceled":
        doc["urgency"] = item["urgency"]
    if item.get("tags"):
        doc["subjects"] = [{"name": t, "uri": tag_uri(t)} for t in item["tags"]]
    if item.get("reason"):
        doc["edNote"] = item["reason"]
    if item.get("id"):
        doc["altIds"] = [{"role": ID_ROLE, "value": item["id"]}]
    if status != "canceled":
        _content(doc, item)
    return doc


def _content(doc: dict[str, Any], item: Mapping[str, Any]) -> None:
    headlines = []
    if item.get("title"):
        headlines.append({"role": "main", "value": item["title"]})
    if item.get("subtitle"):
        headlines.append({"role": "subhead", "value": item["subtitle"]})
    if headlines:
        doc["headlines"] = headlines
    if item.get("body"):
        doc["bodies"] = [{"role": "main", "contentType": "text/plain", "value": item["body"]}]
    if item.get("url"):
        href = quote(item["url"], safe=_URI_SAFE)  # an IRI's non-ASCII: percent-encoded
        doc["renditions"] = [{"name": "web", "href": href, "contentType": "text/html"}]
    content_to_ninjs(doc, item, uri_for)
    extra_to_ninjs(doc, item)
    # An http(s) uri became a hashed guid; the uri it came in with is kept in extra.
    kept = (item.get("extra") or {}).get("uri")
    if isinstance(kept, str) and guid_for(kept) == item["guid"]:
        doc["uri"] = kept


def story_to_ninjs(
    current: Mapping[str, Any], versions: list[Mapping[str, Any]], first: str | None
) -> dict[str, Any]:
    """A story read: its ``current`` version as ninjs, with the page of ``versions``
    read in ``wire:versions``, each created ``first`` (version 1's time, if kept)."""
    return {**to_ninjs(current, first), VERSIONS: [to_ninjs(v, first) for v in versions]}


def from_ninjs(doc: object) -> dict[str, Any]:
    """An incoming ninjs document as a submission dict for ``parse_submission``.

    Properties the wire does not model (``language``, ``people``, ``version``,
    ``versionCreated``, other providers' extensions, ...) are ignored; the ones
    it reads must have the ninjs shape, or a ValidationError names them.
    """
    if not isinstance(doc, dict):
        raise ValidationError("the request body must be a ninjs JSON object")
    for name in doc:
        if isinstance(name, str) and name.startswith("wire:") and name not in _EXTENSIONS_IN:
            raise ValidationError(f"unknown wire extension {quoted(name)}", field=name)
    status = doc.get("pubStatus")
    held = status == "withheld" and doc.get("embargoedUntil") is not None
    if status not in (None, "usable") and not held:
        raise ValidationError(
            "pubStatus must be usable (or withheld with embargoedUntil); "
            "withdraw a story with POST /v1/stories/<guid>/withdraw",
            field="pubStatus",
        )
    title, subtitle = _headlines(doc.get("headlines"))
    data = {
        "guid": _guid(doc.get("uri")),
        "title": title,
        "subtitle": subtitle,
        "body": _body(doc.get("bodies")),
        "tags": _tags(doc.get("subjects")),
        "url": _web_link(doc.get("renditions")),
        "urgency": doc.get("urgency"),
        "embargo_until": doc.get("embargoedUntil"),
        "mark": doc.get(MARK),
    }
    return {k: v for k, v in data.items() if v is not None}


def parse_ninjs(
    doc: object, *, now: datetime | None = None, default_language: str = DEFAULT_LANGUAGE
) -> Submission:
    """Validate a ninjs document; errors name the ninjs property, not the wire field.

    A document with no subject that gives a tag (IPTC's own example articles
    have none) is tagged with its ninjs ``type`` (``text``, ``picture``...), as
    every wire item needs a tag to be routed.
    """
    data = from_ninjs(doc)
    assert isinstance(doc, dict)  # from_ninjs refuses anything else
    data.update(content_from_ninjs(doc, guid_for))
    if data.get("guid", "").startswith(HASHED_PREFIX):
        data["extra"] = {"uri": doc["uri"].strip(), **data.get("extra", {})}
    if "mark" not in data:
        data.update(_mark_genre(doc.get("genres")))
    if "title" not in data and isinstance(doc.get("title"), str):
        data["title"] = doc["title"]  # an event or a picture may have a title, no headline
    if "tags" not in data and isinstance(doc.get("type"), str) and _is_tag(doc["type"]):
        data["tags"] = [doc["type"]]
    try:
        return parse_submission(data, now=now, default_language=default_language)
    except ClientError as err:
        raise _in_ninjs_terms(err) from None


def _in_ninjs_terms(err: ClientError) -> ClientError:
    """``err`` with the ninjs property (and phrase) for the wire field it names."""
    field = (err.field or "").split("[")[0].split(".")[0]
    if field not in _NINJS_FIELD:
        return err
    message = err.message
    phrase = _NINJS_PHRASE.get(field)
    if phrase and message.startswith(field + " "):
        message = phrase + message[len(field) :]
    elif field == "tags" and not isinstance(err, InvalidTag):
        message = message.replace("tags", "subjects")  # "at most 20 subjects per item"
    return type(err)(message, field=_NINJS_FIELD[field])


def _mark_genre(genres: object) -> dict[str, str]:
    """``{"mark": m}`` for a ``wire:mark:<m>`` genre, else nothing."""
    for genre in genres if isinstance(genres, list) else []:
        uri = genre.get("uri") if isinstance(genre, dict) else None
        if isinstance(uri, str) and uri.startswith(MARK_GENRE):
            return {"mark": unquote(uri[len(MARK_GENRE) :])}
    return {}


def _guid(uri: object) -> str | None:
    if uri is None:
        return None  # the wire assigns one, as for JSON submissions
    if not isinstance(uri, str) or not _URI.fullmatch(uri.strip()):
        raise ValidationError(
            "uri must be an absolute URI, like urn:newsml:example.com:20240601:abc", field="uri"
        )
    return guid_for(uri.strip())


def _objects(value: object, name: str, shape: str) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ValidationError(f"{name} must be an array of objects {shape}", field=name)
    return value


def _strings(entry: dict[str, Any], name: str, *keys: str) -> None:
    for key in keys:
        if entry.get(key) is not None and not isinstance(entry[key], str):
            raise ValidationError(f"{name}[].{key} must be a string", field=name)


def _headlines(value: object) -> tuple[str | None, str | None]:
    headlines = _objects(value, "headlines", '{"role", "value"}')
    for h in headlines:
        _strings(h, "headlines", "role", "value", "contentType")
    subs = [h for h in headlines if h.get("role") in SUB_ROLES]
    mains = (
        [h for h in headlines if h.get("role") == "main"]
        or [h for h in headlines if h.get("role") is None]
        or [h for h in headlines if h.get("role") not in SUB_ROLES]
    )
    return (mains[0].get("value") if mains else None, subs[0].get("value") if subs else None)


def _body(value: object) -> str | None:
    bodies = _objects(value, "bodies", '{"role", "contentType", "value"}')
    for b in bodies:
        _strings(b, "bodies", "role", "value", "contentType")
    ranked = [b for b in bodies if b.get("role") in (None, "main")] + bodies
    for b in ranked:
        if (b.get("contentType") or "").lower() in _PLAIN and b.get("value") is not None:
            return str(b["value"])
    for b in ranked:
        if (b.get("contentType") or "").lower() in _HTML and b.get("value") is not None:
            return html_to_text(b["value"])
    return None


def _tags(value: object) -> list[str] | None:
    """Subjects with a ``wire:tag:`` uri are the tags; else subject names that are tags.

    Names that are not valid tags (another vocabulary's "economy, business and
    finance") are skipped, unless none is valid: then they go to the validator,
    which names the first bad one.
    """
    subjects = _objects(value, "subjects", '{"name", "uri"}')
    for s in subjects:
        _strings(s, "subjects", "name", "uri", "literal")
    explicit = [
        unquote(s["uri"][len(TAG_PREFIX) :])
        for s in subjects
        if (s.get("uri") or "").startswith(TAG_PREFIX)
    ]
    if explicit:
        return explicit
    # A subject with a uri (a Media Topic...) is a subject in its own right
    # (wire.core.ninjs_content): its name is a tag only when it is a valid one.
    loose = [s.get("name") or s.get("literal") for s in subjects if not s.get("uri")]
    names = [s.get("name") or s.get("literal") for s in subjects]
    valid = [n for n in names if n and _is_tag(n)]
    return valid or [n for n in loose if n] or None


def _is_tag(name: str) -> bool:
    try:
        normalize_tag(name)
    except InvalidTag:
        return False
    return True


def _web_link(value: object) -> str | None:
    renditions = _objects(value, "renditions", '{"name", "href", "contentType"}')
    for r in renditions:
        _strings(r, "renditions", "name", "href", "contentType")
    for r in renditions:
        if r.get("name") == "web" and r.get("href"):
            return str(r["href"])
    for r in renditions:
        if (r.get("contentType") or "").lower() == "text/html" and r.get("href"):
            return str(r["href"])
    return None  # pictures, video, ...: not the story's link


def html_to_text(markup: str) -> str:
    """Plain text of an HTML body: paragraphs and line breaks kept, tags dropped."""
    parser = _TextParser()
    parser.feed(markup)
    parser.close()
    text = "".join(parser.parts)
    lines = [re.sub(r"[ \t\r\f\v]+", " ", line).strip() for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


class _TextParser(HTMLParser):
    _BLOCKS = frozenset(
        {"p", "div", "h1", "h2", "h3", "h4", "h5", "h6", "li", "ul", "ol", "blockquote", "pre"}
        | {"table", "tr", "section", "article", "header", "footer", "figure", "figcaption"}
    )
    _SKIP = frozenset({"script", "style"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self._skipping += 1
        elif tag == "br":
            self.parts.append("\n")
        elif tag in self._BLOCKS:
            self.parts.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            self._skipping = max(0, self._skipping - 1)
        elif tag in self._BLOCKS:
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data.replace("\n", " "))
