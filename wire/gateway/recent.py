"""The window of recently dispatched items a gateway keeps in memory.

Most catch-ups ask for the last minutes; serving those from here instead of
Redis makes a resume storm cheap. The window is contiguous after ``base``
(everything dispatched after it is here) and bounded by a count and by the
bytes of item JSON. Pure: the hub feeds it each dispatched batch.
"""

from __future__ import annotations

import bisect
import operator
from collections.abc import Sequence

from wire.core.entry import Entry
from wire.core.ids import ZERO, StreamKey
from wire.core.resume import Window

_key = operator.attrgetter("key")


class Recent:
    """The newest dispatched entries, contiguous after :attr:`base`."""

    __slots__ = ("base", "entries", "max_bytes", "size", "total")

    def __init__(self, size: int = 10_000, max_bytes: int = 64 << 20) -> None:
        self.entries: list[Entry] = []
        #: Everything dispatched after this key is held; None before :meth:`start`.
        self.base: StreamKey | None = None
        #: Entries kept after an eviction (up to twice as many between evictions).
        self.size = size
        #: The cap in bytes of item JSON, and what is held now.
        self.max_bytes = max_bytes
        self.total = 0

    def start(self, position: StreamKey) -> None:
        """Begin empty at ``position`` (where the reader starts)."""
        self.base = position
        self.entries.clear()
        self.total = 0

    def add(self, entries: Sequence[Entry]) -> None:
        """Remember a dispatched batch; a withdrawal removes its story's versions."""
        self.entries.extend(entries)
        self.total += sum([len(e.json) for e in entries])
        killed = {e.guid for e in entries if e.withdrawal}
        if killed:
            # History never again shows a withdrawn story's versions; the
            # withdrawal itself stays so resuming clients learn of it.
            self.entries = [e for e in self.entries if e.withdrawal or e.guid not in killed]
            self.total = sum([len(e.json) for e in self.entries])
        if len(self.entries) > 2 * self.size or self.total > self.max_bytes:
            self._evict()

    def _evict(self) -> None:
        """Drop the oldest entries: down to ``size`` and to 3/4 of the byte cap.

        Cutting the list's head moves the rest, so it is done once per many
        batches (past twice the count, or the byte cap), not on every one.
        Replays of a range the window no longer covers read Redis.
        """
        recent = self.entries
        cut = max(0, len(recent) - self.size)
        total = self.total - sum([len(e.json) for e in recent[:cut]])
        target = self.max_bytes * 3 // 4
        while cut < len(recent) and total > target:
            total -= len(recent[cut].json)
            cut += 1
        if cut:
            self.base = recent[cut - 1].key
            del recent[:cut]
        self.total = total

    def window(self, window: Window) -> list[Entry] | None:
        """Entries in ``window``, or None when the window does not reach back that far."""
        if self.base is None or window.after < self.base:
            return None
        lo = bisect.bisect_right(self.entries, window.after, key=_key)
        hi = bisect.bisect_right(self.entries, window.upto, key=_key)
        return self.entries[lo:hi]

    def latest(self, keys: frozenset[str], limit: int, upto: StreamKey) -> list[Entry] | None:
        """The newest ``limit`` entries matching ``keys`` up to ``upto``, oldest first.

        None when the window runs out before ``limit`` matches are found and
        older entries may exist in the stream.
        """
        found: list[Entry] = []
        for entry in reversed(self.entries):
            if entry.key > upto or not entry.matches(keys):
                continue
            found.append(entry)
            if len(found) == limit:
                return found[::-1]
        if self.base == ZERO:
            return found[::-1]
        return None
