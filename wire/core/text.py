"""The one validator of free text: item fields, a withdrawal's reason, captions, names.

The rules are in docs/protocol.md ("Text fields").
"""

from __future__ import annotations

import unicodedata

from wire.core.errors import ValidationError

#: Bidirectional embeddings, overrides and isolates: in a one-paragraph field
#: they reorder what follows them ("Trojan Source"), so a title can read as
#: something other than what was sent.
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
#: Combining marks allowed on one base character: real scripts (Vietnamese,
#: Devanagari, Tibetan stacks) stay within it, "Zalgo" text does not.
MAX_MARKS = 4
_LINE_BREAKS = frozenset("\u2028\u2029")
#: The two noncharacters XML 1.0 cannot carry, not even as a character
#: reference: the Atom feed could only drop them while JSON, ninjs and SSE
#: kept them, so the same item would read differently. Refused instead.
NOT_XML = frozenset("\ufffe\uffff")


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
    newline), no U+FFFE or U+FFFF (XML cannot carry them), no bidi controls
    unless ``bidi``, at most 4 combining marks on one character.
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
        if ch in NOT_XML:
            raise ValidationError(f"{name} contains noncharacter U+{ord(ch):04X}", field=name)
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
