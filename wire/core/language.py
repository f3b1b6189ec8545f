"""Languages: BCP 47 tags (RFC 5646), checked by shape and normalized in case.

``pt-br`` and ``PT-BR`` are the same language as ``pt-BR``; storing one
spelling lets a subscription to ``pt-BR`` match every item in it. The check is
of the tag's syntax (language, extlang, script, region, variants, extensions,
private use), not of the IANA registry: a new subtag is not refused.
"""

from __future__ import annotations

import re

from wire.core.errors import ValidationError, quoted

DEFAULT_LANGUAGE = "en"
MAX_LANGUAGE = 64
_TAG = re.compile(
    r"""
    (?:
      (?P<language>[a-z]{2,3}(?:-[a-z]{3}){0,3}|[a-z]{4,8})
      (?:-(?P<script>[a-z]{4}))?
      (?:-(?P<region>[a-z]{2}|[0-9]{3}))?
      (?:-(?:[a-z0-9]{5,8}|[0-9][a-z0-9]{3}))*
      (?:-[a-wyz0-9](?:-[a-z0-9]{2,8})+)*
      (?:-x(?:-[a-z0-9]{1,8})+)?
    | x(?:-[a-z0-9]{1,8})+
    )
    """,
    re.VERBOSE,
)


def normalize_language(value: object, name: str = "language") -> str:
    """A BCP 47 tag in its canonical case: ``zh-hant-tw`` is ``zh-Hant-TW``.

    Raises a ValidationError naming ``name``. Case follows RFC 5646 2.1.1:
    everything lower case, but a script title case and a region upper case.
    """
    if not isinstance(value, str):
        raise ValidationError(f"{name} must be a BCP 47 language tag string", field=name)
    raw = value.strip().replace("_", "-")
    tag = raw.lower()
    match = _TAG.fullmatch(tag) if raw.isascii() and len(raw) <= MAX_LANGUAGE else None
    if match is None:
        raise ValidationError(
            f"{name} {quoted(value[:80])} is not a BCP 47 language tag"
            " (like en, pt-BR, zh-Hant-TW)",
            field=name,
        )
    parts = tag.split("-")
    script, region = match.group("script"), match.group("region")
    # The script and region sit right after the language (and extlangs), so
    # their positions are known: the first such subtag after the language.
    lang_len = len(match.group("language").split("-")) if match.group("language") else 0
    index = lang_len
    if script:
        parts[index] = script.title()
        index += 1
    if region:
        parts[index] = region.upper()
    return "-".join(parts)
