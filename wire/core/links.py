"""Links: the one check of every http(s) URL an item carries (its link, pictures, entities)."""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from urllib.parse import urlsplit

from wire.core.errors import ValidationError, quoted
from wire.core.text import NOT_XML

MAX_URL = 2_048
_ASCII_LABEL = re.compile(r"[A-Za-z0-9_-]{1,63}")
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")
_NUMERIC_LABEL = re.compile(r"(?:0[xX][0-9A-Fa-f]*|[0-9]+)")
_DOT_SEGMENTS = frozenset((".", "..", "%2e", ".%2e", "%2e.", "%2e%2e"))


def check_url(value: object, name: str = "url") -> str | None:
    """An absolute http(s) URL that means the same to us as to a browser.

    Returns the trimmed URL, None for an absent one; a ValidationError names
    ``name``. Browsers parse URLs by the WHATWG URL standard, Python by RFC
    3986; every place where the two differ (a backslash is a path separator to
    a browser, tabs and newlines are dropped, ``%2e`` is a dot, ``0x7f.1`` is
    an IPv4 address...) could make a link show one host and open another, so a
    URL that relies on any of them is refused rather than interpreted.
    """
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValidationError(f"{name} must be a string", field=name)
    value = value.strip()
    if not value:
        return None
    error = f"{name} must be an absolute http(s) link"
    # Whitespace, controls (DEL and C1 too), invisible format characters
    # (bidi overrides can disguise where a link goes) and U+FFFE/U+FFFF (an
    # Atom feed cannot carry them: its link would differ) must be percent-encoded.
    if len(value) > MAX_URL or any(
        ch.isspace() or ch == "\\" or ch in NOT_XML or unicodedata.category(ch) in ("Cc", "Cf")
        for ch in value
    ):
        raise ValidationError(error + " (no spaces, controls or backslashes)", field=name)
    try:
        parts = urlsplit(value)
        _ = parts.port  # raises for a port that is not a number from 0 to 65535
    except ValueError:
        raise ValidationError(error, field=name) from None
    # "http:example.com" and "http:/example.com" open example.com in a browser.
    if parts.scheme not in ("http", "https") or value[len(parts.scheme) + 1 :][:2] != "//":
        raise ValidationError(error, field=name)
    if "@" in parts.netloc:
        raise ValidationError(f"{name} must not carry a user name or password (@)", field=name)
    _check_host(parts.hostname or "", parts.netloc, name)
    if any(seg.lower() in _DOT_SEGMENTS for seg in parts.path.split("/")):
        raise ValidationError(f"{name} path must not contain . or .. segments", field=name)
    return value


def _check_host(host: str, netloc: str, name: str) -> None:
    """A host name (ASCII or IDN), a dotted-quad IPv4 address or a bracketed IPv6 one."""
    error = f"{name} must be an absolute http(s) link"
    if netloc.startswith("["):
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValidationError(error, field=name) from None
        return
    labels = host[:-1].split(".") if host.endswith(".") else host.split(".")
    if not host or not all(labels) or len(host) > 253:
        raise ValidationError(error, field=name)
    # A browser reads any host whose last label is a number as an IPv4 address
    # (in decimal, octal or hex, with 1 to 4 parts); only the plain form is kept.
    if _NUMERIC_LABEL.fullmatch(labels[-1]) and not _IPV4.fullmatch(".".join(labels)):
        raise ValidationError(f"{name} host must be a dotted-quad IPv4 address", field=name)
    for label in labels:
        if not (_ASCII_LABEL.fullmatch(label) or _idn_label(label)):
            raise ValidationError(f"{name} host label {quoted(label)} is not valid", field=name)


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
