"""Tags as the server normalizes them, so the library filters exactly as the wire does.

This is the library's own copy of the server's rules (``wire.core.tags``):
the library installs without the server, and tests/test_subscriber_package.py
checks on generated input that both copies accept, refuse and normalize alike.
A subscription is normalized once, before it is sent; an item matches when
one of its tags equals a subscribed tag or lies below it (``world`` matches
``world/europe/france``); ``*`` matches everything.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

from subscriber.errors import SubscriptionError

MAX_TAG_LENGTH = 64
WILDCARD = "*"

_WHITESPACE_RUN = re.compile(r"\s+")
# Letters, combining marks and decimal digits; format characters (zero-width
# joiners, bidi controls) are refused because they make equal-looking tags differ.
_ALLOWED_CATEGORIES = frozenset({"Lu", "Ll", "Lt", "Lm", "Lo", "Mn", "Mc", "Me", "Nd"})


def _invalid(message: str) -> SubscriptionError:
    return SubscriptionError("invalid_tag", message, "tags")


def normalize_tag(raw: object) -> str:
    """The canonical form of one tag, or :class:`SubscriptionError` (code ``invalid_tag``)."""
    if not isinstance(raw, str):
        raise _invalid(f"tag must be a string, got {type(raw).__name__}")
    tag = unicodedata.normalize("NFKC", raw).casefold().strip()
    tag = unicodedata.normalize("NFKC", _WHITESPACE_RUN.sub("-", tag))
    shown = raw if len(raw) <= 80 else raw[:77] + "..."
    if not tag:
        raise _invalid(f"tag {shown!r} is empty")
    if len(tag) > MAX_TAG_LENGTH:
        raise _invalid(f"tag {shown!r} is longer than {MAX_TAG_LENGTH} characters")
    for ch in tag:
        if ch not in "-/" and unicodedata.category(ch) not in _ALLOWED_CATEGORIES:
            raise _invalid(f"tag {shown!r} contains {ch!r} (U+{ord(ch):04X})")
    if "" in tag.split("/"):
        raise _invalid(f"tag {shown!r} has an empty '/' segment")
    return tag


def normalize_tags(raw: Iterable[object]) -> frozenset[str]:
    """A subscription's tags, normalized (``*`` kept as the wildcard)."""
    if isinstance(raw, str):
        raise TypeError("tags must be a list of tags, not a string")
    return frozenset(
        WILDCARD if isinstance(t, str) and t.strip() == WILDCARD else normalize_tag(t) for t in raw
    )


def matches(subscription: Iterable[str], item_tags: Iterable[str]) -> bool:
    """True when any subscribed tag equals, or is an ancestor of, an item tag."""
    wanted = frozenset(subscription)
    if WILDCARD in wanted:
        return True
    for tag in item_tags:
        parts = tag.split("/")
        if any("/".join(parts[: i + 1]) in wanted for i in range(len(parts))):
            return True
    return False
