"""Gapless, duplicate-free resume, as pure decisions.

The gateway's reader has delivered everything up to its ``position``. When a
connection asks for history (``since`` or ``backfill``) the gateway:

1. marks the connection as catching up, so live items after ``position`` are
   buffered for it instead of written;
2. reads history only up to that ``position`` (never past it: anything later
   arrives through the buffer);
3. sends history, then the buffer, each filtered through the connection's
   ``last_sent`` key so an item can never go out twice.

The decisions are pure and live here: the window to replay, whether
retention cut it, :func:`fresh` (the no-duplicate rule) and, for a catch-up
taken over by another, :func:`remainder`. Reading the sources and
interleaving them in stream order (each key once) is
:func:`wire.gateway.replay.merge`, the one merge.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from wire.core.entry import Entry
from wire.core.ids import ZERO, StreamKey, preceding


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


@dataclass(frozen=True, slots=True)
class Kept:
    """What the stream still holds, as far as a reader resuming in it can tell."""

    #: The greatest id retention removed ((0, 0): none).
    trimmed: StreamKey
    #: The oldest entry kept (None: the stream holds none).
    first: StreamKey | None

    def lost_upto(self, since: StreamKey) -> StreamKey:
        """The greatest id a reader resuming after ``since`` can no longer read
        (nothing is lost when it is not after ``since``, see :func:`is_truncated`).

        What retention removed, and everything before the stream's oldest
        entry when ``since`` names an id older than it. A stream that was never
        trimmed keeps every id it ever made, so a cursor older than its first
        entry comes from a stream that is gone: Redis lost its data (a restart
        without persistence, a failover to an empty replica) or the key was
        deleted, and whatever followed that cursor went with it. 0-0 names no
        item: a reader from the very start lost nothing it knew of.
        """
        if since == ZERO or self.first is None or since >= self.first:
            return self.trimmed
        return max(self.trimmed, preceding(self.first))


def fresh(entries: Iterable[Entry], last_sent: StreamKey) -> list[Entry]:
    """Entries strictly after ``last_sent``, in order: the no-duplicate rule."""
    return [e for e in entries if e.key > last_sent]


def compact(entries: Sequence[Entry]) -> list[Entry]:
    """Only the latest entry of each story, kept at that entry's stream position."""
    latest: dict[str, StreamKey] = {}
    for e in entries:
        latest[e.guid] = e.key
    return [e for e in entries if latest[e.guid] == e.key]


def packed(key: StreamKey) -> int:
    """A key as one int (each part is below 2**64), which costs a third of the tuple."""
    return key[0] << 64 | key[1]


class Newest:
    """The newest version's id of each story seen, for compaction, up to ``cap`` stories.

    This is all a compact catch-up keeps of the range it reads a first time:
    one small int per story, not the entries; the second read sends the
    entries :meth:`keeps` picks. ``add`` returns False once more than ``cap``
    stories were seen (the caller then sends the range uncompacted).
    """

    __slots__ = ("cap", "ids")

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.ids: dict[str, int] = {}

    def add(self, entries: Iterable[Entry]) -> bool:
        ids = self.ids
        for e in entries:  # in stream order, so the last one seen is the newest
            ids[e.guid] = packed(e.key)
        return len(ids) <= self.cap

    def keeps(self, entry: Entry) -> bool:
        return self.ids.get(entry.guid) == packed(entry.key)


# --- what a catch-up still owes a connection ----------------------------------
#
# A catch-up is a list of sources, each an ordered run of entries. A source is
# a description, not the entries, so a catch-up interrupted by a new
# subscribe can be restarted from the connection's ``last_key`` without
# losing or repeating anything (see :func:`remainder`); even the live items
# held for it are handed over as the window of the stream they fell in.


@dataclass(frozen=True, slots=True)
class Since:
    """Entries in ``window`` that match ``keys``; of each story only its newest when ``compact``."""

    window: Window
    keys: frozenset[str]
    compact: bool = False
    #: The client's ``since``, until it has been checked against retention.
    unchecked: StreamKey | None = None


@dataclass(frozen=True, slots=True)
class Latest:
    """A backfill: the newest ``limit`` entries matching ``keys`` up to ``upto``
    (those after ``after``)."""

    keys: frozenset[str]
    limit: int
    upto: StreamKey
    after: StreamKey = ZERO


Source = Since | Latest


def narrowed(source: Source, keys: frozenset[str]) -> Source | None:
    """``source`` for only those of its keys in ``keys``; None when none is left."""
    kept = source.keys & keys
    if kept == source.keys:
        return source
    return replace(source, keys=kept) if kept else None


def remainder(source: Source, sent: StreamKey) -> Source | None:
    """What is left of ``source`` once everything it had up to ``sent`` was written.

    None when nothing is left. For a compact range this is the compact of the
    rest of the range: a story's newest version after ``sent`` is also its
    newest in the whole range.
    """
    if isinstance(source, Latest):
        return replace(source, after=max(source.after, sent)) if sent < source.upto else None
    window = Window(max(source.window.after, sent), source.window.upto)
    return None if window.empty else replace(source, window=window)
