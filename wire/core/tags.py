"""Tag normalization and matching, shared by items and subscriptions.

A tag is normalized once at each boundary (publisher input, subscribe message)
so that everything past it compares plain strings. Hierarchy is expressed with
``/``: a subscription to ``world`` matches an item tagged
``world/europe/france`` because ``world`` is one of that tag's prefixes. The
gateway therefore looks items up by their tags' prefixes (a handful per item)
rather than testing every subscription against every item.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

from wire.core.errors import InvalidTag

MAX_TAG_LENGTH = 64
WILDCARD = "*"

_WHITESPACE_RUN = re.compile(r"\s+")
# Letters (all scripts), combining marks (needed by Devanagari, Thai, ...) and
# decimal digits. Format characters (Cf: zero-width joiners, bidi controls) are
# deliberately absent: they make two tags that look identical compare unequal.
_ALLOWED_CATEGORIES = frozenset({"Lu", "Ll", "Lt", "Lm", "Lo", "Mn", "Mc", "Me", "Nd"})
#: A tag of only these needs no look at each character's category (most do).
_PLAIN = re.compile(r"[a-z0-9/-]+")


def normalize_tag(raw: object) -> str:
    """Return the canonical form of one tag, or raise :class:`InvalidTag`.

    NFKC, casefold, trim, inner whitespace runs to ``-``; then 1-64 characters
    of letters, marks, digits, ``-`` and ``/`` with no empty ``/`` segment.
    """
    if not isinstance(raw, str):
        raise InvalidTag(f"tag must be a string, got {type(raw).__name__}", field="tags")
    tag = unicodedata.normalize("NFKC", raw).casefold().strip()
    tag = _WHITESPACE_RUN.sub("-", tag)
    # casefold can produce characters that NFKC would change again (rare, but
    # normalizing twice makes the function idempotent, which the tests check).
    tag = unicodedata.normalize("NFKC", tag)
    shown = raw if len(raw) <= 80 else raw[:77] + "..."
    if not tag:
        raise InvalidTag(f"tag {shown!r} is empty", field="tags")
    if len(tag) > MAX_TAG_LENGTH:
        raise InvalidTag(f"tag {shown!r} is longer than {MAX_TAG_LENGTH} characters", field="tags")
    for ch in "" if _PLAIN.fullmatch(tag) else tag:
        if ch not in "-/" and unicodedata.category(ch) not in _ALLOWED_CATEGORIES:
            raise InvalidTag(
                f"tag {shown!r} contains {ch!r} (U+{ord(ch):04X}); "
                "tags are letters, digits, '-' and '/'",
                field="tags",
            )
    if "" in tag.split("/"):
        raise InvalidTag(f"tag {shown!r} has an empty '/' segment", field="tags")
    return tag


def normalize_tags(raw: Iterable[object], *, allow_wildcard: bool = False) -> tuple[str, ...]:
    """Normalize many tags, merging duplicates and keeping first-seen order."""
    seen: dict[str, None] = {}
    for item in raw:
        if allow_wildcard and isinstance(item, str) and item.strip() == WILDCARD:
            seen[WILDCARD] = None
        else:
            seen[normalize_tag(item)] = None
    return tuple(seen)


def prefixes(tag: str) -> list[str]:
    """All subscription keys that match ``tag``: itself and each ancestor.

    >>> prefixes("world/europe/france")
    ['world', 'world/europe', 'world/europe/france']
    """
    parts = tag.split("/")
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def match_keys(item_tags: Iterable[str]) -> frozenset[str]:
    """Every subscription key that an item with these tags is delivered to."""
    keys = {WILDCARD}
    for tag in item_tags:
        keys.update(prefixes(tag))
    return frozenset(keys)


def matches(subscription: Iterable[str], item_tags: Iterable[str]) -> bool:
    """True when any subscribed tag equals, or is an ancestor of, an item tag."""
    return not match_keys(item_tags).isdisjoint(subscription)
