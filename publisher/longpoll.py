"""``GET /v1/items?after=<id>&wait=<s>``: a cursor that waits a little when nothing is new.

A read that finds nothing after ``after`` waits (up to ``wait`` seconds, at
most 30) for a matching item instead of answering empty at once. Waiting costs
no Redis read: the request waits on the batches the gateway's stream reader
dispatches anyway (:class:`wire.runtime.arrivals.Arrivals`), checks each one
itself, and reads history again only when an entry in it matches. A
publisher-only process (``wire publisher``) has no stream reader, so it runs a
watcher of its own (:func:`setup_watcher`, started by the first wait): one
blocking ``XREAD`` at a time per process, whatever the number of waiters. A process holds at most
``max_waiters`` waiting requests; past that a read answers at once, as
without ``wait``: the client's next request is its wait.

Every answer carries ``next``. With items, it is the last one's id (or where
the scan budget stopped); empty, it is ``after`` itself, so a loop on ``next``
never skips an item and never sees one twice.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
from collections.abc import AsyncIterator, Sequence
from typing import NamedTuple

from aiohttp import web

from wire.core.entitlements import Grant
from wire.core.entry import Entry
from wire.core.errors import ValidationError
from wire.core.ids import StreamKey
from wire.core.resume import Window
from wire.runtime.arrivals import Arrivals
from wire.runtime.supervisor import SUPERVISOR, Supervisor
from wire.storage.store import Filter, Scan, Store, connect
from wire.web.appkeys import ARRIVALS, SETTINGS, STORE
from wire.web.http import redis_unavailable

log = logging.getLogger("wire.publisher.longpoll")

MAX_WAIT = 30.0
_WAIT = re.compile(r"[0-9]{1,2}(\.[0-9]{1,3})?")


def query_wait(request: web.Request) -> float:
    """``?wait=S``: seconds from 0 to 30 (up to three decimals), 0 when absent."""
    raw = request.query.get("wait")
    if raw is None:
        return 0.0
    if not _WAIT.fullmatch(raw) or float(raw) > MAX_WAIT:
        raise ValidationError(
            f"wait must be a number of seconds from 0 to {MAX_WAIT:g}", field="wait"
        )
    return float(raw)


class Polled(NamedTuple):
    """A long poll's answer: the visible entries, the ``next`` cursor, and the
    ranges retention removed before the read reached them (``history_truncated``)."""

    entries: list[Entry]
    next: StreamKey
    gaps: tuple[Window, ...] = ()


def _wakes(batch: Sequence[Entry], after: StreamKey, wanted: Filter, grant: Grant) -> bool:
    """True when ``batch`` holds an entry after ``after`` that this read would return."""
    return any(e.key > after and wanted.passes(e) and grant.sees(e.tags) for e in batch)


async def poll_after(
    request: web.Request,
    after: StreamKey,
    wanted: Filter,
    grant: Grant,
    limit: int,
    wait: float,
) -> Polled:
    """The visible entries after ``after`` (oldest first), the ``next`` cursor and
    any retention gaps, waiting up to ``wait`` seconds for one when there is none yet."""
    arrivals = request.app.get(ARRIVALS)
    watcher = request.app.get(WATCHER)
    if wait and watcher is not None:
        watcher.start(request.app[SUPERVISOR])
    if not wait or arrivals is None or not arrivals.take_slot():
        return _answer(await _read(request, after, wanted, limit), after, grant)
    try:
        return await _wait(request, arrivals, after, wanted, grant, limit, wait)
    finally:
        # Also when the client went away and aiohttp cancelled the handler.
        arrivals.free_slot()


async def _wait(
    request: web.Request,
    arrivals: Arrivals[Entry],
    after: StreamKey,
    wanted: Filter,
    grant: Grant,
    limit: int,
    wait: float,
) -> Polled:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while True:
        # Taken before the read: a batch landing between the two still wakes us.
        batch, seen = arrivals.next_batch(), arrivals.published
        scan = await _read(request, after, wanted, limit)
        # A read that found only retention's gaps carries ``next`` past them.
        if scan.entries or scan.next is not None:
            return _answer(scan, after, grant)
        while True:
            left = deadline - loop.time()
            if left <= 0:
                return Polled([], after)
            # asyncio.wait, not wait_for: a timeout must not cancel the shared future.
            await asyncio.wait([batch], timeout=left)
            if not batch.done():
                return Polled([], after)
            missed = arrivals.published != seen + 1
            if missed or _wakes(batch.result(), after, wanted, grant):
                break  # read history again: it redacts and pages as every read does
            batch, seen = arrivals.next_batch(), arrivals.published


async def _read(request: web.Request, after: StreamKey, wanted: Filter, limit: int) -> Scan:
    store = request.app[STORE]
    return await store.history_after(after, wanted.keys, limit, languages=wanted.languages)


def _answer(scan: Scan, after: StreamKey, grant: Grant) -> Polled:
    """What the reader sees of ``scan``, and where it goes on from."""
    if scan.next is not None:
        going_on = scan.next
    elif scan.entries:
        going_on = scan.entries[-1].key
    else:
        going_on = after
    return Polled(grant.visible(scan.entries), going_on, scan.gaps)


def setup_watcher(app: web.Application) -> None:
    """Give a publisher-only app its own arrivals, fed by one watcher task."""
    app.cleanup_ctx.append(_watcher_ctx)


async def _watcher_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    assert settings.redis_url is not None
    # A blocking XREAD of up to 5 s needs a client whose socket waits longer.
    redis = connect(settings.redis_url, socket_timeout=15.0)
    arrivals: Arrivals[Entry] = Arrivals(settings.max_waiters)
    app[ARRIVALS] = arrivals
    app[WATCHER] = watcher = Watcher(Store(redis, settings), arrivals, settings.read_batch)
    yield
    if watcher.started:
        await app[SUPERVISOR].stop("arrivals")
    await redis.aclose()


class Watcher:
    """Reads the stream's new entries for waiting requests (publisher-only processes).

    Started by the first request that waits, so a publisher nobody long-polls
    costs Redis nothing. That first waiter may miss an item published while
    the watcher starts: it then answers empty when its wait ends, and the
    client's next read (from the same ``next``) returns the item.
    """

    def __init__(self, store: Store, arrivals: Arrivals[Entry], batch: int) -> None:
        self.store, self.arrivals, self.batch = store, arrivals, batch
        #: Where the next read starts; kept across Redis outages and restarts.
        self.position: StreamKey | None = None
        self.started = False

    def start(self, supervisor: Supervisor) -> None:
        """Run :meth:`run` under ``supervisor`` (once)."""
        if not self.started:
            self.started = True
            supervisor.start("arrivals", self.run)

    async def run(self) -> None:
        """Read forever; a waiter that misses a batch (an outage) only waits longer,
        since it reads history itself before waiting and after its wait."""
        delay = 0.05
        task = asyncio.current_task()
        while True:
            # A cancel landing mid-XREAD can be lost inside redis-py (or come out
            # as a ConnectionError), as for the gateway's reader: without these
            # checks the app's shutdown would wait forever.
            if task is not None and task.cancelling():
                raise asyncio.CancelledError
            try:
                if self.position is None:
                    self.position = await self.store.last_key()
                entries = await self.store.read_new(self.position, count=self.batch, block_ms=5000)
                delay = 0.05
            except Exception as err:
                if not redis_unavailable(err):  # a bug: the supervisor restarts the task
                    raise
                if task is not None and task.cancelling():
                    raise asyncio.CancelledError from err
                log.warning("long-poll watcher: redis unavailable (%s); retrying", err)
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 2.0)
                continue
            if entries:
                self.position = entries[-1].key
                self.arrivals.publish(entries)


#: A publisher-only app's watcher (absent when a gateway's reader feeds the arrivals).
WATCHER = web.AppKey("watcher", Watcher)
