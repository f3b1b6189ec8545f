"""The query parameters the read routes share: ``tags``, ``lang``, ``limit``."""

from __future__ import annotations

import re

from aiohttp import web

from wire.core.errors import ValidationError
from wire.core.language import normalize_language
from wire.core.tags import WILDCARD, normalize_tags

MAX_LIMIT = 500
DEFAULT_LIMIT = 50
#: A query number: a few ASCII digits (no sign, space or "_"; never thousands).
_DIGITS = re.compile(r"[0-9]{1,9}")


def query_tags(request: web.Request) -> frozenset[str]:
    """``?tags=a,b`` normalized; no tags means everything."""
    raw = [t for t in request.query.get("tags", "").split(",") if t.strip()]
    return frozenset(normalize_tags(raw, allow_wildcard=True)) if raw else frozenset({WILDCARD})


def query_languages(request: web.Request) -> frozenset[str]:
    """``?lang=en,ru`` in canonical case; none means every language."""
    raw = [t for t in request.query.get("lang", "").split(",") if t.strip()]
    return frozenset(normalize_language(t, "lang") for t in raw)


def query_limit(request: web.Request, default: int = DEFAULT_LIMIT) -> int:
    """``?limit=N``, 1-500, ``default`` (50) without one."""
    limit = query_number(request, "limit", 1, MAX_LIMIT, "an integer")
    return default if limit is None else limit


def query_number(request: web.Request, name: str, low: int, high: int, what: str) -> int | None:
    """``?<name>=N``, from ``low`` to ``high`` (None when absent); ``what`` names
    the kind of number in the 400 a bad one gets."""
    raw = request.query.get(name)
    if raw is None:
        return None
    # str.isdigit() is not enough: it accepts "²" (which int() rejects, a 500)
    # and thousands of digits (which int() refuses to convert).
    if not _DIGITS.fullmatch(raw) or not low <= int(raw) <= high:
        raise ValidationError(f"{name} must be {what} from {low} to {high}", field=name)
    return int(raw)
