"""Gapless, duplicate-free resume, as pure decisions.

The gateway's reader has delivered everything up to its ``position``. When a
connection asks for history (``since`` or ``backfill``) the gateway:

1. marks the connection as catching up, so live items after ``position`` are
   buffered for it instead of written;
2. reads history only up to that ``position`` (never past it: anything later
   arrives through the buffer);
3. sends history, then the buffer, each filtered through the connection's
   ``last_sent`` key so an item can never go out twice.

The functions here make steps 2 and 3 decisions; the I/O lives in the gateway.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from wire.entry import Entry
from wire.ids import ZERO, StreamKey


@dataclass(frozen=True, slots=True)
class Window:
    """History to replay: entries with ``after`` < id <= ``upto``."""

    after: StreamKey
    upto: StreamKey

    @property
    def empty(self) -> bool:
        return self.after >= self.upto


def replay_window(since: StreamKey, last_sent: StreamKey, position: StreamKey) -> Window:
    """What to replay for ``since`` on a connection that already got ``last_sent``."""
    return Window(max(since, last_sent), position)


def is_truncated(since: StreamKey, trimmed_upto: StreamKey) -> bool:
    """True when retention removed entries the client has not seen."""
    return trimmed_upto != ZERO and since < trimmed_upto


def fresh(entries: Iterable[Entry], last_sent: StreamKey) -> list[Entry]:
    """Entries strictly after ``last_sent``, in order: the no-duplicate rule."""
    return [e for e in entries if e.key > last_sent]


def merge(history: Sequence[Entry], buffered: Sequence[Entry], last_sent: StreamKey) -> list[Entry]:
    """History followed by buffered live entries, each sent at most once, in order."""
    out = fresh(history, last_sent)
    tail = out[-1].key if out else last_sent
    out.extend(fresh(buffered, tail))
    return out


def compact(entries: Sequence[Entry]) -> list[Entry]:
    """Only the latest entry of each story, kept at that entry's stream position."""
    latest: dict[str, StreamKey] = {}
    for e in entries:
        latest[e.guid] = e.key
    return [e for e in entries if latest[e.guid] == e.key]
