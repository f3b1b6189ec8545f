"""The item model and its validator: the one door through which news enters.

:func:`parse_submission` turns an editor's JSON object into a
:class:`Submission` or raises a :class:`~wire.errors.ValidationError` naming
the field. Nothing else builds a Submission, so code past this boundary
(store, gateway) trusts it. The stored form adds ``id``, ``version`` and
``published_at``, set by the server; its layout is :mod:`wire.core.stored`'s.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
import unicodedata
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from wire.core import stored
from wire.core.errors import ValidationError, quoted
from wire.core.stored import iso as iso  # re-exported: callers know the time format here
from wire.core.stored import published_now as published_now  # re-exported too
from wire.core.tags import normalize_tags

MAX_TITLE = 300
MAX_SUBTITLE = 1_000
MAX_BODY = 100_000
MAX_MARK = 40
MAX_URL = 2_048
MAX_TAGS = 20
DEFAULT_URGENCY = 5

FIELDS = ("title", "subtitle", "body", "tags", "mark", "url", "urgency", "guid", "embargo_until")
SERVER_FIELDS = ("id", "version", "published_at", "pubstatus")
MAX_EMBARGO_DAYS = 366
_GUID = re.compile(r"[A-Za-z0-9._~:@+=-]{1,200}")


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

    def pending(self) -> dict[str, Any]:
        """The JSON of an accepted embargoed item: no id or version until release."""
        return stored.pending(self)

    def released(self) -> Submission:
        """The same item without its embargo, as published when it falls due."""
        return replace(self, embargo_until=None)


def new_guid() -> str:
    """A fresh story id for items whose editor did not choose one."""
    return "urn:wire:" + secrets.token_hex(12)


def parse_submission(data: object, *, now: datetime | None = None) -> Submission:
    """Validate an editor's JSON object; raise ValidationError naming the field.

    ``now`` is when the request arrived; an ``embargo_until`` must be after it.
    """
    if not isinstance(data, dict):
        raise ValidationError("the request body must be a JSON object")
    for name in data:
        if name in SERVER_FIELDS:
            raise ValidationError(f"{name} is set by the server", field=name)
        if name not in FIELDS:
            raise ValidationError(f"unknown field {quoted(name)}", field=str(name))
    return Submission(
        title=_text(data, "title", MAX_TITLE, required=True, multiline=False) or "",
        subtitle=_text(data, "subtitle", MAX_SUBTITLE),
        body=_text(data, "body", MAX_BODY),
        mark=_text(data, "mark", MAX_MARK, multiline=False),
        tags=_tags(data.get("tags")),
        url=_url(data.get("url")),
        urgency=_urgency(data.get("urgency")),
        guid=_guid(data.get("guid")),
        embargo_until=_embargo(data.get("embargo_until"), now or datetime.now(UTC)),
    )


def _text(
    data: dict[str, Any], name: str, limit: int, *, required: bool = False, multiline: bool = True
) -> str | None:
    return check_text(
        data.get(name), name, limit, required=required, multiline=multiline, bidi=name == "body"
    )


#: Bidirectional embeddings, overrides and isolates: in a one-paragraph field
#: they reorder what follows them ("Trojan Source"), so a title can read as
#: something other than what was sent.
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
#: Combining marks allowed on one base character: real scripts (Vietnamese,
#: Devanagari, Tibetan stacks) stay within it, "Zalgo" text does not.
MAX_MARKS = 4
_LINE_BREAKS = frozenset("\u2028\u2029")


def check_text(
    value: object,
    name: str,
    limit: int,
    *,
    required: bool = False,
    multiline: bool = True,
    bidi: bool = False,
) -> str | None:
    """The one validator of every free-text field (item fields, a withdrawal's reason).

    Returns the trimmed text, or None for an absent optional field; raises a
    ValidationError naming ``name``. The rules are in docs/protocol.md
    ("Text fields"): no control characters (a one-line field not even tab or
    newline), no bidi controls unless ``bidi``, at most 4 combining marks on
    one character.
    """
    if value is None:
        if required:
            raise ValidationError(f"{name} is required", field=name)
        return None
    if not isinstance(value, str):
        raise ValidationError(f"{name} must be a string", field=name)
    value = value.strip()
    if not value:
        if required:
            raise ValidationError(f"{name} must not be empty", field=name)
        return None
    if len(value) > limit:
        raise ValidationError(f"{name} is longer than {limit:,} characters", field=name)
    if multiline:
        # Editors on Windows send CRLF; store one line-ending convention
        # rather than reject the text for its carriage returns.
        value = value.replace("\r\n", "\n").replace("\r", "\n")
    _check_characters(value, name, multiline=multiline, bidi=bidi)
    return value


def _check_characters(value: str, name: str, *, multiline: bool, bidi: bool) -> None:
    allowed = "\n\t" if multiline else ""
    marks = 0
    for ch in value:
        category = unicodedata.category(ch)
        if ch not in allowed and (category == "Cc" or (not multiline and ch in _LINE_BREAKS)):
            raise ValidationError(f"{name} contains control character U+{ord(ch):04X}", field=name)
        if not bidi and ch in BIDI_CONTROLS:
            raise ValidationError(
                f"{name} contains bidirectional control U+{ord(ch):04X}", field=name
            )
        marks = marks + 1 if category in ("Mn", "Me") else 0
        if marks > MAX_MARKS:
            raise ValidationError(
                f"{name} stacks more than {MAX_MARKS} combining marks on one character",
                field=name,
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


_URL_ERROR = "url must be an absolute http(s) link"
_ASCII_LABEL = re.compile(r"[A-Za-z0-9_-]{1,63}")
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")
_NUMERIC_LABEL = re.compile(r"(?:0[xX][0-9A-Fa-f]*|[0-9]+)")
_DOT_SEGMENTS = frozenset((".", "..", "%2e", ".%2e", "%2e.", "%2e%2e"))


def _url(value: object) -> str | None:
    """An absolute http(s) URL that means the same to us as to a browser.

    Browsers parse URLs by the WHATWG URL standard, Python by RFC 3986; every
    place where the two differ (a backslash is a path separator to a browser,
    tabs and newlines are dropped, ``%2e`` is a dot, ``0x7f.1`` is an IPv4
    address...) could make a link show one host and open another, so a URL
    that relies on any of them is refused rather than interpreted.
    """
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValidationError("url must be a string", field="url")
    value = value.strip()
    if not value:
        return None
    # Whitespace, controls (DEL and C1 too) and invisible format characters
    # (bidi overrides can disguise where a link goes) must be percent-encoded.
    if len(value) > MAX_URL or any(
        ch.isspace() or ch == "\\" or unicodedata.category(ch) in ("Cc", "Cf") for ch in value
    ):
        raise ValidationError(_URL_ERROR + " (no spaces, controls or backslashes)", field="url")
    try:
        parts = urlsplit(value)
        _ = parts.port  # raises for a port that is not a number from 0 to 65535
    except ValueError:
        raise ValidationError(_URL_ERROR, field="url") from None
    # "http:example.com" and "http:/example.com" open example.com in a browser.
    if parts.scheme not in ("http", "https") or value[len(parts.scheme) + 1 :][:2] != "//":
        raise ValidationError(_URL_ERROR, field="url")
    if "@" in parts.netloc:
        raise ValidationError("url must not carry a user name or password (@)", field="url")
    _check_host(parts.hostname or "", parts.netloc)
    if any(seg.lower() in _DOT_SEGMENTS for seg in parts.path.split("/")):
        raise ValidationError("url path must not contain . or .. segments", field="url")
    return value


def _check_host(host: str, netloc: str) -> None:
    """A host name (ASCII or IDN), a dotted-quad IPv4 address or a bracketed IPv6 one."""
    if netloc.startswith("["):
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValidationError(_URL_ERROR, field="url") from None
        return
    labels = host[:-1].split(".") if host.endswith(".") else host.split(".")
    if not host or not all(labels) or len(host) > 253:
        raise ValidationError(_URL_ERROR, field="url")
    # A browser reads any host whose last label is a number as an IPv4 address
    # (in decimal, octal or hex, with 1 to 4 parts); only the plain form is kept.
    if _NUMERIC_LABEL.fullmatch(labels[-1]) and not _IPV4.fullmatch(".".join(labels)):
        raise ValidationError("url host must be a dotted-quad IPv4 address", field="url")
    for label in labels:
        if not (_ASCII_LABEL.fullmatch(label) or _idn_label(label)):
            raise ValidationError(f"url host label {quoted(label)} is not valid", field="url")


def _idn_label(label: str) -> bool:
    """A non-ASCII label a browser would map to itself: letters, marks, digits, hyphens.

    Fullwidth letters, ideographic full stops and other characters that IDNA
    mapping turns into something else are refused.
    """
    if label.isascii() or unicodedata.normalize("NFKC", label) != label.lower():
        return False
    if not all(ch == "-" or unicodedata.category(ch)[0] in "LMN" for ch in label):
        return False
    try:
        return len(label.encode("idna")) <= 63
    except UnicodeError:
        return False


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


def _guid(value: object) -> str:
    if value is None:
        return new_guid()
    if not isinstance(value, str) or not _GUID.fullmatch(value):
        raise ValidationError(
            "guid must be 1-200 characters of letters, digits and . _ ~ : @ + = -",
            field="guid",
        )
    return value
