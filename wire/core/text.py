"""The one validator of free text: item fields, a withdrawal's reason, captions, names.

The rules are in docs/protocol.md ("Text fields").
"""

from __future__ import annotations

import re
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

# The rules are checked by regular expressions over the whole text, not one
# character at a time in Python: a 3,000-character body took 750 us that way
# here, about what the rest of a POST costs. Cc is exactly U+0000-U+001F and
# U+007F-U+009F.
_CONTROLS = r"\x00-\x08\x0b-\x1f\x7f-\x9f"
#: The first character a field may not hold, by (multiline, bidi allowed).
_REFUSED = {
    (multiline, bidi): re.compile(
        "["
        + (_CONTROLS if multiline else _CONTROLS + r"\t\n" + "".join(sorted(_LINE_BREAKS)))
        + "".join(sorted(NOT_XML))
        + ("" if bidi else "".join(sorted(BIDI_CONTROLS)))
        + "]"
    )
    for multiline in (False, True)
    for bidi in (False, True)
}
#: Runs long enough to stack too many marks, of characters that may be
#: combining marks: never ASCII, never a letter or digit (``\w``).
_MAYBE_MARKS = re.compile(r"[^\x00-\x7f\w]{" + str(MAX_MARKS + 1) + ",}")
#: More than MAX_MARKS marks in a row, in a run's categories joined (each is
#: two letters and none ends in "M", so a match cannot straddle two).
_STACK = re.compile("(?:M[ne]){" + str(MAX_MARKS + 1) + "}")


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
    """Raise for the first character that breaks a rule, as a scan in order would."""
    refused = _REFUSED[multiline, bidi].search(value)
    end = len(value) if refused is None else refused.start()
    if not value.isascii() and _stacks_marks(value, end):
        raise ValidationError(
            f"{name} stacks more than {MAX_MARKS} combining marks on one character", field=name
        )
    if refused is not None:
        raise _refusal(refused.group(), name)


def _stacks_marks(value: str, end: int) -> bool:
    """Whether ``value[:end]`` holds more than MAX_MARKS combining marks in a row."""
    category = unicodedata.category
    return any(
        _STACK.search("".join(map(category, run)))
        for run in _MAYBE_MARKS.findall(value, 0, end)
    )


def _refusal(ch: str, name: str) -> ValidationError:
    """The error for a character :data:`_REFUSED` found, named as the rules name it."""
    if ch in NOT_XML:
        return ValidationError(f"{name} contains noncharacter U+{ord(ch):04X}", field=name)
    if ch in BIDI_CONTROLS:
        return ValidationError(f"{name} contains bidirectional control U+{ord(ch):04X}", field=name)
    return ValidationError(f"{name} contains control character U+{ord(ch):04X}", field=name)
