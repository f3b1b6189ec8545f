"""What the hub holds for a connection while its catch-up is sent, in bounded memory.

Live items that arrive while a catch-up (``since``, ``compact``, ``backfill``)
is sent are held and go out after it, so the client gets the stream in order.
Held past the connection's cap they are dropped, not the connection: every
one of them is in the stream, so the catch-up goes on with the window they
fell in (after the position holding started from, up to the hub's position)
and holding starts again from there. The client loses nothing and its memory
here stays under the cap. Only a catch-up that overflowed :data:`MAX_SPILLS`
times (its client reads slower than the wire publishes, all along) ends as a
slow consumer (4008); it resumes with ``since``. Pure: the hub and the
session do the reading and writing.
"""

from __future__ import annotations

from wire.core.entry import Entry
from wire.core.ids import StreamKey
from wire.core.resume import Window

#: Overflows one catch-up may turn into windows of history before its
#: connection is a slow consumer.
MAX_SPILLS = 4


class Holding:
    """One replaying connection's held live entries and the window any overflow dropped."""

    __slots__ = ("after", "entries", "size", "spilled", "spills")

    def __init__(self, after: StreamKey) -> None:
        #: Every entry held (or dropped) since holding started is after this key.
        self.after = after
        self.entries: list[Entry] = []
        #: Bytes of item JSON held (counted against the connection's cap).
        self.size = 0
        #: Entries were dropped: the window from ``after`` is owed, from the stream.
        self.spilled = False
        self.spills = 0

    @property
    def empty(self) -> bool:
        """Nothing held or dropped since holding (re)started."""
        return not self.entries and not self.spilled

    def add(self, entry: Entry, cap: int) -> bool:
        """Hold ``entry``; False when over ``cap`` with no overflow left to spend."""
        self.entries.append(entry)
        self.size += len(entry.json)
        if self.size <= cap:
            return True
        if self.spills >= MAX_SPILLS:
            return False
        self.spills += 1
        self.spilled = True
        self.entries, self.size = [], 0
        return True

    def hand_over(self, position: StreamKey) -> Window | None:
        """Everything held or dropped so far, as the window of the stream it fell
        in (None when nothing was); holding goes on from ``position``, from empty.

        For a subscribe that takes over a catch-up: the entries are not handed
        to it, the window is (read again from the stream, in order with the new
        history). Handed over as entries they left the count against the cap,
        and a client that reads nothing but subscribes again and again had the
        gateway keep every live item for it.
        """
        entries, spilled, window = self._restart(position)
        return window if entries or spilled else None

    def take(self, position: StreamKey) -> tuple[list[Entry], Window | None]:
        """What is held, and the window owed when entries were dropped (held
        entries are inside it: they come again from the stream); holding goes on
        from ``position``."""
        entries, spilled, window = self._restart(position)
        return ([], window) if spilled else (entries, None)

    def _restart(self, position: StreamKey) -> tuple[list[Entry], bool, Window]:
        """What was held, whether any was dropped, and the window all of it fell in
        (up to ``position``, which every held or dropped entry is at or before);
        holding starts again, empty, from ``position``."""
        entries, spilled, window = self.entries, self.spilled, Window(self.after, position)
        self.entries, self.size, self.spilled, self.after = [], 0, False, position
        return entries, spilled, window
