"""Language tags (BCP 47) as the wire normalizes them, for the library's local filter.

The server validates and normalizes an item's ``language`` (``en``,
``pt-BR``, ``zh-Hant-TW``); a subscription names languages the same way. The
filter is an exact match of whole tags, compared case-insensitively: ``en``
does not match ``en-GB`` (subscribe to both to get both), which is the
server's rule too, so the library never yields what the server would not
have sent.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from subscriber.errors import SubscriptionError

MAX_LANGUAGE_LENGTH = 35
# A primary language subtag (2-3 letters, or 4-8 for registered ones) and
# subtags of 1-8 letters or digits: the shape of BCP 47, not its registry.
_SHAPE = re.compile(r"[A-Za-z]{2,8}(?:-[A-Za-z0-9]{1,8})*")


def normalize_language(raw: object) -> str:
    """``EN-gb`` as ``en-GB``: the case conventions of BCP 47 (RFC 5646 section 2.1.1).

    Raises :class:`SubscriptionError` (code ``invalid_language``) for
    anything that is not shaped like a language tag.
    """
    # ``en_GB`` is read as ``en-GB``, as the server reads it.
    text = raw.strip().replace("_", "-") if isinstance(raw, str) else ""
    if not _SHAPE.fullmatch(text):
        raise SubscriptionError("invalid_language", f"not a language tag: {raw!r}", "languages")
    if len(text) > MAX_LANGUAGE_LENGTH:
        raise SubscriptionError("invalid_language", f"language tag too long: {text!r}", "languages")
    first, *rest = text.split("-")
    parts = [first.lower()]
    for part in rest:
        # After a singleton (x-, u-...) subtags are private or extensions: lower case.
        if len(parts[-1]) == 1:
            parts.append(part.lower())
        elif len(part) == 4 and part.isalpha():
            parts.append(part.title())  # script: Hant
        elif len(part) == 2 and part.isalpha():
            parts.append(part.upper())  # region: BR
        else:
            parts.append(part.lower())
    return "-".join(parts)


def normalize_languages(raw: Iterable[object]) -> frozenset[str]:
    """A subscription's languages, normalized; empty means every language."""
    if isinstance(raw, str):
        raise TypeError("languages must be a list of language tags, not a string")
    return frozenset(normalize_language(tag) for tag in raw)


def language_matches(wanted: frozenset[str], language: str) -> bool:
    """True when no language is asked for, the item names none, or it is one asked for.

    An item without a language comes from a server older than languages,
    which could not filter either; it is let through rather than lost.
    """
    if not wanted or not language:
        return True
    folded = language.casefold()
    return any(folded == tag.casefold() for tag in wanted)
