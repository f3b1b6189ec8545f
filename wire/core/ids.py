"""Redis stream entry ids: the wire's global order and every client's cursor.

An id is ``<milliseconds>-<sequence>``. Clients echo them back as ``since``,
``after`` and ``Last-Event-ID``, so they are parsed strictly here and compared
as integer pairs (string comparison would put ``9-0`` after ``10-0``).
"""

from __future__ import annotations

import re

from wire.core.errors import ValidationError, quoted

StreamKey = tuple[int, int]

ZERO: StreamKey = (0, 0)
# ASCII digits only: ``\d`` would also accept Arabic-Indic and other digits that
# int() reads, so ``١٢٣-٠`` would alias ``123-0``.
_ID = re.compile(r"([0-9]{1,20})(?:-([0-9]{1,20}))?")
_MAX = 2**64 - 1
# Redis keeps both parts in unsigned 64-bit integers. The very last id has no
# successor, so reading after it (an exclusive range, or seq + 1) is an error
# inside Redis rather than an empty answer.
LAST: StreamKey = (_MAX, _MAX)


def parse_id(raw: str, *, field: str = "id") -> StreamKey:
    """Parse ``ms-seq`` (or a bare ``ms``, meaning ``ms-0``) into a sortable key."""
    m = _ID.fullmatch(raw) if isinstance(raw, str) else None
    if m is None:
        raise ValidationError(
            f"{field} must be a stream id like 1717236000000-0, got {quoted(raw)}",
            field=field,
        )
    ms, seq = int(m.group(1)), int(m.group(2) or 0)
    if ms > _MAX or seq > _MAX:
        raise ValidationError(f"{field} is out of range for a Redis stream id", field=field)
    return ms, seq


def parse_cursor(raw: str, *, field: str) -> StreamKey:
    """Parse a client's position (``after``, ``since``): an id something can follow.

    Both parts must fit Redis's unsigned 64-bit integers, and the very last
    id is refused too: nothing can be stored after it, and Redis rejects a
    range that starts after it.
    """
    key = parse_id(raw, field=field)
    if key == LAST:
        raise ValidationError(f"{field} is out of range: nothing can follow it", field=field)
    return key


def format_id(key: StreamKey) -> str:
    """The ``ms-seq`` text of a key."""
    return f"{key[0]}-{key[1]}"


def preceding(key: StreamKey) -> StreamKey:
    """The greatest id before ``key`` (``key`` itself for 0-0, which has none)."""
    ms, seq = key
    if seq:
        return ms, seq - 1
    return (ms - 1, _MAX) if ms else ZERO
