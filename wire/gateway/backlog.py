"""What the hub queues for a connection whose socket is behind, with urgent items overtaking.

Past the hold mark of unsent data, the hub stops handing a connection's items
to asyncio (where nothing can be reordered) and queues them here. An urgent
item (urgency 1-2) that arrives behind lower-urgency ones is sent at once,
marked ``ahead``; it keeps its place in the queue, so the connection's order
and resume cursor stay those of the stream, and it is skipped when the queue
is written. Pure: the hub does the writing.
"""

from __future__ import annotations

from collections.abc import Sequence

from wire.core.entry import Entry
from wire.core.ids import StreamKey
from wire.core.resume import fresh

#: Urgency 1 (flash) and 2 (bulletin) overtake a queue.
URGENT = 2


class Backlog:
    """One lagging connection's queue: entries, their bytes, and those sent ahead."""

    __slots__ = ("ahead", "entries", "size")

    def __init__(self) -> None:
        self.entries: list[Entry] = []
        #: Bytes of item JSON queued (counted against the connection's cap).
        self.size = 0
        #: Keys of queued entries already sent ahead; None when there are none
        #: (an empty set costs 216 bytes).
        self.ahead: set[StreamKey] | None = None

    def add(self, entries: Sequence[Entry], last_sent: StreamKey, overtake: bool) -> list[Entry]:
        """Queue what comes after everything queued or sent; return what to send ahead now.

        Only entries after the queue's tail (or ``last_sent``) are taken: a
        replay page that overlaps the queue must not put an item in it (or
        send it ahead) twice. Urgent entries overtake only when ``overtake``
        (not on SSE, whose ids must increase) and only a non-empty queue.
        """
        queue = self.entries
        tail = queue[-1].key if queue else last_sent
        if entries and entries[0].key <= tail:
            entries = fresh(entries, tail)
        if not entries:
            return []
        urgent: list[Entry] = []
        if queue and overtake:
            urgent = [e for e in entries if e.urgency <= URGENT and e.key > last_sent]
            if urgent:
                self.ahead = (self.ahead or set()) | {e.key for e in urgent}
        queue.extend(entries)
        self.size += sum(len(e.json) for e in entries)
        return urgent

    def release(self) -> tuple[list[Entry], StreamKey | None]:
        """What to write once the socket drained (all but what went ahead) and the last key
        queued (None when nothing was), which the connection has then been sent."""
        queue, ahead = self.entries, self.ahead
        self.entries, self.size, self.ahead = [], 0, None
        if not queue:
            return [], None
        if ahead:
            return [e for e in queue if e.key not in ahead], queue[-1].key
        return queue, queue[-1].key
