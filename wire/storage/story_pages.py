"""A story's versions read a window at a time (``GET /v1/stories/<guid>``).

A story's ids list (:func:`keys.story_ids`) gains one id per version and is
never trimmed, so a live blog may hold thousands: a read takes a window of it
(LRANGE with bounds, never ``0 -1``) and reads that window's entries newest
first, in rounds of a script (``scripts.ENTRIES``) that stops at a byte budget.

Version n is the list's n-th id (index n - 1). Every script that RPUSHes an
id (``append``, which publish and embargo release share, and the withdrawal)
increments the story hash's ``version`` in the same atomic step, once each,
and gives both keys the same expiry in that step; nothing else writes either
(no LTRIM, LREM or LSET anywhere). So a window of positions is a window of
version numbers, and the versions below n are the list's first n - 1 ids.

Retention trims the stream from its oldest end only (MAXLEN and MINID; wire
never XDELs), and the list is in stream order: once one id of the list names
a removed entry, so does every id before it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from wire.core import stored
from wire.core.entitlements import Sees
from wire.core.entry import Entry
from wire.storage import keys, scripts

#: Entries the first round of a read fetches, before their size is known:
#: a typical story's whole page in one round trip, and at the largest item
#: (about 400 KB) still less than one answer's bytes.
FIRST_ROUND = 8
#: Ids one LRANGE of the search for a reader's current version takes.
SEARCH_WINDOW = 500



@dataclass(frozen=True, slots=True)
class StoryPage:
    """A window of a story's versions, as read for one answer."""

    guid: str
    #: The versions read, oldest first (a withdrawn story's as stubs).
    versions: list[Entry]
    #: Read the versions numbered below this next (None: nothing older is kept).
    older: int | None
    #: The story's newest version number; 0 when there is no such story.
    newest: int
    #: The number of the window's newest version (``newest`` on the first page).
    top: int
    #: The story's own state (its hash), not whether the page holds the withdrawal.
    withdrawn: bool


def stub(entry: Entry) -> Entry:
    """A withdrawn version with its content removed (see :func:`stored.stub`)."""
    return Entry(entry.id, entry.tags, entry.urgency, entry.guid, stored.stub(entry.json))


class StoryReader:
    """Reads a story's versions a window at a time, within byte and entry budgets."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self._entries = redis.register_script(scripts.ENTRIES)
        self._kept = redis.register_script(scripts.KEPT)
        self._window = redis.register_script(scripts.STORY_WINDOW)

    async def read_page(self, guid: str, limit: int, before: int | None, budget: int) -> StoryPage:
        """The newest ``limit`` versions of ``guid`` numbered below ``before`` (from the
        newest when None), and about ``budget`` bytes of them: reading stops after the
        version that reaches it, so a page holds at least one version."""
        ids_key = keys.story_ids(guid)
        start, stop = (-limit, -1) if before is None else (max(0, before - 1 - limit), before - 2)
        # One script: the count, the state and the window agree with each other.
        head: Any = await self._window(keys=[ids_key, keys.story(guid)], args=[start, stop])
        newest, withdrawn, window = head
        if before is not None and before > newest + 1:
            # Past the newest version: that window is empty; the first page is meant.
            return await self.read_page(guid, limit, None, budget)
        top = newest if before is None else before - 1
        found: list[Entry] = []
        read = 0
        async for entry in self.read_entries(window[::-1], budget):
            read += 1
            if entry is None:  # removed by retention, and so is every older version
                return StoryPage(guid, found[::-1], None, newest, top, bool(withdrawn))
            found.append(stub(entry) if withdrawn and not entry.withdrawal else entry)
        oldest = top - read + 1
        # Retention may have removed every older version: then there is no older.
        older = oldest if oldest > 1 and await self.kept(guid, oldest - 1) else None
        return StoryPage(guid, found[::-1], older, newest, top, bool(withdrawn))

    async def kept(self, guid: str, version: int) -> bool:
        """Whether version ``version`` of ``guid`` is still kept (one round trip, and
        not the entry itself)."""
        found: Any = await self._kept(keys=[keys.story_ids(guid), keys.STREAM], args=[version - 1])
        return bool(found)

    async def read_entries(
        self, ids: Sequence[bytes], budget: int, first: int = FIRST_ROUND
    ) -> AsyncIterator[Entry | None]:
        """The entries of ``ids`` in that order (None for one retention removed, and
        nothing after it), ending after the one whose JSON brings the total to
        ``budget`` bytes.

        A round trip asks for as many as the budget has room for at the sizes seen
        so far (``first`` to start with), as ``scripts.RANGE`` does, and the script
        (``scripts.ENTRIES``) stops at the budget itself: a page of small versions
        is one round trip, and small versions above hundreds of 400 KB ones never
        fetch those to answer ten of them.
        """
        done = size = 0
        while done < len(ids):
            room = first if not size else (budget - size) * done // size
            chunk = ids[done : done + max(1, room)]
            rows: list[Any] = await self._entries(keys=[keys.STREAM], args=[budget - size, *chunk])
            for row in rows:
                if not row:  # removed by retention, and so is every id before it
                    yield None
                    return
                eid, fields = row[0]
                entry = Entry.from_fields(eid, dict(zip(fields[::2], fields[1::2], strict=True)))
                yield entry
                size += len(entry.json)
                if size >= budget:
                    return
            if len(rows) < len(chunk):  # the script stopped at the budget
                return
            done += len(chunk)

    async def newest_seen(
        self, guid: str, below: int, sees: Sees, entries: int, budget: int
    ) -> Entry | None:
        """The newest kept version of ``guid`` numbered below ``below`` whose tags pass
        ``sees``; None when there is none among the next ``entries`` versions and about
        ``budget`` bytes of them (read newest first, a window at a time)."""
        top = below - 1
        while top >= 1 and entries > 0 and budget > 0:
            n = min(SEARCH_WINDOW, entries, top)
            window: Any = await self.redis.lrange(keys.story_ids(guid), top - n, top - 1)
            # One entry first: the newest is the one wanted for most readers.
            async for entry in self.read_entries(window[::-1], budget, first=1):
                if entry is None:  # retention removed it and everything older
                    return None
                if sees(entry.tags):
                    return entry
                if entry.withdrawal:  # it carries every version's tags: none is seen
                    return None
                budget -= len(entry.json)
            if len(window) < n:  # the list expired meanwhile
                return None
            entries, top = entries - n, top - n
        return None
