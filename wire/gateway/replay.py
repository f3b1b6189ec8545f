"""Reading what a catch-up owes a connection, in bounded memory.

A catch-up (``since``, ``compact``, ``backfill``) is a list of sources
(:mod:`wire.core.resume`). :class:`History` turns each into pages of entries, from
the hub's window of recent items when it covers them, else from Redis a page
at a time (pages of about ``PAGE_BYTES``, whatever the items' size);
:func:`merge` interleaves several sources' pages in stream order, each entry
once, cut into batches small in entries and in bytes. Nothing here holds a
whole range: a compact catch-up reads its range twice, keeping only one id per
story in between. A catch-up that reads Redis first takes one of the process's
``max_catchups`` turns (the hub's ``catchups`` semaphore) and keeps it to its end.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator

from wire.core.entry import Entry
from wire.core.ids import StreamKey
from wire.core.resume import Latest, Newest, Source, Window, fresh
from wire.gateway.hub import Hub
from wire.storage.store import Store

log = logging.getLogger("wire.gateway.replay")

#: Entries per page handed to the connection (each written once the socket took the last).
SEND_PAGE = 100


class History:
    """The pages of a catch-up's sources, for one gateway process."""

    __slots__ = ("compact_stories", "gaps", "gate", "holding", "hub", "store")

    def __init__(
        self, hub: Hub, store: Store, compact_stories: int, gate: asyncio.Semaphore | None = None
    ) -> None:
        self.hub = hub
        self.store = store
        self.compact_stories = compact_stories
        #: Bounds the catch-ups of a process that read Redis at once (None: unbounded).
        self.gate = gate
        self.holding = False
        #: Ranges that retention removed before the read reached them, not told yet.
        self.gaps: list[Window] = []

    async def _turn(self) -> None:
        """Wait for this catch-up's turn to read Redis; kept until :meth:`release`.

        Taken once, however many sources read Redis: a catch-up never waits
        for a second turn while holding one, so turns cannot deadlock.
        """
        if self.gate is not None and not self.holding:
            await self.gate.acquire()
            self.holding = True

    def release(self) -> None:
        """The catch-up ended (sent, taken over or closed): give its turn back."""
        if self.holding and self.gate is not None:
            self.holding = False
            self.gate.release()

    def pages(self, source: Source) -> AsyncIterator[list[Entry]]:
        """The source's entries, oldest first, a page at a time."""
        if isinstance(source, Latest):
            return self._latest(source)
        if source.compact:
            return self._compact(source.window, source.keys)
        return self._window(source.window, source.keys)

    async def _window(self, window: Window, keys: frozenset[str]) -> AsyncIterator[list[Entry]]:
        """Matching entries in the window (withdrawn versions left out)."""
        cached = self.hub.recent_window(window)
        if cached is not None:
            yield [e for e in cached if e.matches(keys)]
            return
        await self._turn()
        async for page in self.store.pages_after(window.after, window.upto, keys, gaps=self.gaps):
            yield page

    def cut(self, page: list[Entry]) -> list[list[Entry] | Window]:
        """``page`` in runs of entries, with each retention gap found so far placed
        before the first entry past its end (the client is told of it there).

        Another source merged into the catch-up (a subscribe that took it over)
        may have read entries inside a gap before retention removed them: they
        go out before it, so that nothing inside a gap follows it. By then every
        source has read past the gap (the merge sends the smallest key first),
        so the gaps of several sources over one range are known, and told as one.
        """
        if not self.gaps:
            return [page]
        parts: list[list[Entry] | Window] = []
        run: list[Entry] = []
        for entry in page:
            due = [g for g in self.gaps if g.upto < entry.key]
            if due:
                if run:
                    parts.append(run)
                    run = []
                parts.extend(union(due))
                # In place: the reads under way add to this very list.
                self.gaps[:] = [g for g in self.gaps if g.upto >= entry.key]
            run.append(entry)
        if run:
            parts.append(run)
        return parts

    def rest(self) -> list[Window]:
        """The gaps not told yet (the catch-up has sent everything), as one list of
        ranges that do not overlap; forgotten here."""
        gaps = union(self.gaps)
        self.gaps.clear()
        return gaps

    async def _raw(self, window: Window) -> AsyncIterator[list[Entry]]:
        """Every entry in the window, unfiltered: enough to find each story's newest."""
        cached = self.hub.recent_window(window)
        if cached is not None:
            yield cached
            return
        await self._turn()
        # Pages bounded in bytes: a page of 1,000 entries of 400 KB was 400 MB.
        async for page, _ in self.store.pages_raw(window.after, window.upto):
            raise_if_cancelled()
            yield page

    async def _compact(self, window: Window, keys: frozenset[str]) -> AsyncIterator[list[Entry]]:
        """Of each story only its newest matching version in the window.

        A first read keeps the newest id per story (not the entries); the
        second sends those entries. Withdrawn versions need no redaction in
        the first read: a withdrawal is always its story's newest entry, and
        the second read leaves out what redaction removes. Past
        ``compact_stories`` stories the window goes out uncompacted (every
        version, still in order and once each), so memory stays bounded.
        """
        newest = Newest(self.compact_stories)
        async for page in self._raw(window):
            if not newest.add(e for e in page if e.matches(keys)):
                log.info("compact catch-up over %d stories: sending it uncompacted", newest.cap)
                async for whole in self._window(window, keys):
                    yield whole
                return
        async for page in self._window(window, keys):
            yield [e for e in page if newest.keeps(e)]

    async def _latest(self, source: Latest) -> AsyncIterator[list[Entry]]:
        found = self.hub.recent_latest(source.keys, source.limit, source.upto)
        if found is None:
            await self._turn()
            before = _next(source.upto)
            found = (await self.store.scan_latest(source.keys, source.limit, before=before))[::-1]
        yield fresh(found, source.after)


def union(windows: list[Window]) -> list[Window]:
    """``windows`` merged where they overlap or touch, in stream order."""
    out: list[Window] = []
    for w in sorted(windows, key=lambda w: w.after):
        if out and w.after <= out[-1].upto:
            out[-1] = Window(out[-1].after, max(out[-1].upto, w.upto))
        else:
            out.append(w)
    return out


async def merge(
    streams: list[AsyncIterator[list[Entry]]], max_bytes: int | None = None
) -> AsyncGenerator[list[Entry], None]:
    """Batches from ordered page streams, in stream order, each key once.

    A batch has at most :data:`SEND_PAGE` entries and, with ``max_bytes``, at
    most that many bytes of item JSON (or one entry, when that one is bigger):
    100 items of 400 KB were one 40 MB write, which left any frame queued
    behind it (a keep-alive ping) over the slow-consumer cap.
    """
    pending = [(stream, deque[Entry]()) for stream in streams]
    out: list[Entry] = []
    size = 0
    last: StreamKey | None = None
    while True:
        pending = [(stream, head) for stream, head in pending if await _fill(stream, head)]
        if not pending:
            break
        head = min((h for _, h in pending), key=lambda h: h[0].key)
        entry = head.popleft()
        if last is not None and entry.key <= last:
            continue
        last = entry.key
        if out and max_bytes is not None and size + len(entry.json) > max_bytes:
            yield out
            out, size = [], 0
        out.append(entry)
        size += len(entry.json)
        if len(out) == SEND_PAGE:
            yield out
            out, size = [], 0
    if out:
        yield out


async def _fill(stream: AsyncIterator[list[Entry]], head: deque[Entry]) -> bool:
    """Refill an empty head from its stream; False once the stream has ended."""
    while not head:
        page = await anext(stream, None)
        raise_if_cancelled()
        if page is None:
            return False
        head.extend(page)
    return True


def raise_if_cancelled() -> None:
    """Raise CancelledError when the current task was asked to stop.

    redis-py can swallow a cancel that lands mid-command (3.11's
    ``asyncio.wait_for`` drops it); without this a catch-up taken over by a
    new subscribe could read on through its whole range.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _next(key: StreamKey) -> StreamKey:
    """The smallest key after ``key`` (for inclusive upper bounds)."""
    return key[0], key[1] + 1
