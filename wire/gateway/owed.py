"""Connections owed a share of what the reader took, grouped by when they were touched.

The hub routes entries the moment the reader takes them: each touched
connection's share grows in ``conn.out``, and the connections that had no
share yet form a new :class:`Owed` group, written after the groups before it.
So an entry that arrives while a long dispatch is being written (10,000
connections take some 90 ms here) rides along in the shares of every
connection not written yet, instead of waiting for the whole pass to end:
each item reaches each connection within about one pass, not two.

A group also keeps every entry taken since it began (``taken``). A share is
a subsequence of it (a connection's entries from the group's first batch on,
each at most once, in order), so a share exactly as long *is* it: in a burst
most connections' share is, and its bytes are joined once per encoding
(``whole``) instead of once per connection. Pure: the hub does the writing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from wire.core.entry import Entry

if TYPE_CHECKING:
    from wire.gateway.conn import Conn


class Owed:
    """One group of connections owed a share, in the order they were touched."""

    __slots__ = ("conns", "taken", "whole")

    def __init__(self, entries: list[Entry], conns: list[Conn]) -> None:
        #: Every entry taken since this group began, in stream order.
        self.taken = list(entries)
        self.conns = conns
        #: Encoded ``taken`` per (sse, batched, length): valid while it is that long.
        self.whole: dict[tuple[bool, bool, int], bytes] = {}

    def whole_of(self, conn: Conn, share: list[Entry]) -> bytes | None:
        """The shared bytes of ``share`` when it is everything this group took, else None.

        Only for connections without a grant (a grant narrows what it sees) and
        shares of several entries (one entry's bytes are cached on the entry).
        """
        n = len(share)
        if n != len(self.taken) or n < 2 or conn.grant is not None:
            return None
        encoding = (conn.sse, conn.batch, n)
        data = self.whole.get(encoding)
        if data is None:
            data = self.whole[encoding] = conn.encode(share)
        return data
