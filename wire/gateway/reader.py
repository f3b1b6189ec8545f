"""The one stream reader of a gateway process, and the hub it feeds.

Per process there is one task reading the item stream (a blocking ``XREAD``)
and one :class:`~wire.gateway.hub.Hub` routing what it reads. Connection
handlers only parse client messages, change subscriptions and replay history;
live delivery never passes through them. :func:`reader_ctx` creates both for
an app, with the keep-alive task, and stops them with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Sequence

from aiohttp import web

from wire.core.entry import Entry
from wire.core.ids import format_id
from wire.gateway import keepalive
from wire.gateway.hub import Hub
from wire.runtime.arrivals import Arrivals
from wire.runtime.rightofway import RightOfWay
from wire.runtime.settings import Settings
from wire.runtime.supervisor import SUPERVISOR
from wire.storage.store import Store, connect
from wire.web.appkeys import ARRIVALS, RIGHT_OF_WAY, SETTINGS, TALLY
from wire.web.http import REDIS_DOWN, redis_unavailable

log = logging.getLogger("wire.gateway.reader")

HUB = web.AppKey("hub", Hub)

#: A read that returned within this long of being sent found items waiting:
#: a burst is under way (on a quiet wire a read waits for its item).
BURST_GAP = 0.003
#: The longest a burst's batch is held back for more of it (seconds).
MAX_LINGER = 0.05
#: While a pass is written, look for new entries this often (seconds): they
#: join the shares of the connections the pass has not reached yet (see
#: :mod:`wire.gateway.owed`).
POLL_EVERY = 0.005
#: Only while passes take longer than this (seconds): 1,000 connections take
#: 8-10 ms here, and a look costs a round trip to Redis, which shares the
#: cores with everything else (looking every 5 ms cost 1,000 subscribers 1-2
#: ms of p99 and found nothing); 10,000 take about 90 ms, where an item
#: waiting for the next pass waits one more pass.
LONG_PASS = 0.02


class Reader:
    """The one stream reader of a gateway process, with its readiness."""

    def __init__(
        self,
        store: Store,
        hub: Hub,
        settings: Settings,
        way: RightOfWay | None = None,
        arrivals: Arrivals[Entry] | None = None,
    ) -> None:
        self.store = store
        self.hub = hub
        self.settings = settings
        #: Taken from the moment entries are read until the reader waits again.
        self.way = way if way is not None else RightOfWay()
        self.ready = False
        self.errors = 0
        #: Called with each dispatched batch (metrics set it); a no-op by default.
        self.observe: Callable[[Sequence[Entry]], None] = lambda entries: None
        #: Long-polling reads wait on the batches this reader dispatches.
        self.arrivals: Arrivals[Entry] = (
            arrivals if arrivals is not None else Arrivals(settings.max_waiters)
        )
        #: Batches dispatched and the entries in them (metrics).
        self.batches = 0
        self.entries = 0
        #: How long the last dispatch took (seconds): a burst may linger as long.
        self.dispatch_seconds = 0.0
        self.clock: Callable[[], float] = time.monotonic
        #: When the pass under way last looked for new entries.
        self.polled = 0.0
        #: Taken since the last pass ended: observed and announced when it ends.
        self.taken: list[Entry] = []

    async def run(self) -> None:
        """Read forever; on Redis trouble retry with backoff from where it stopped."""
        delay = 0.05
        gather = self.settings.read_gather_ms / 1000
        started = self.ready = self.hub.recent_base is not None
        task = asyncio.current_task()
        while True:
            # A cancel that lands mid-command can be lost inside redis-py (3.11's
            # asyncio.wait_for drops it, or it comes out as a ConnectionError);
            # without this check the app's shutdown would wait forever.
            if task is not None and task.cancelling():
                raise asyncio.CancelledError
            try:
                if not started:
                    self.hub.start(await self.store.last_key())
                    started = self.ready = True
                elif not self.ready:
                    # Back after an outage: ready as soon as Redis answers, not
                    # when the blocking read below returns (up to 5 s later).
                    await self.store.ping()
                    await self.restart_if_lost()
                    self.ready = True
                await self.step(gather)
                delay = 0.05
            except Exception as err:
                self.write_owed_now()
                self.errors += 1
                if not redis_unavailable(err):
                    # A bug must not silently end delivery for the whole process.
                    # A batch the hub took is not read again (the position is
                    # past it; a connection whose write raised was closed, to
                    # resume with ``since``: see Hub._drop); anything else is
                    # retried, and each connection's last_key keeps an item
                    # from going out twice.
                    log.exception("stream reader: unexpected error; retrying")
                    await asyncio.sleep(1.0)
                    continue
                # Unreachable, or up and refusing (BUSY, LOADING): not ready.
                if task is not None and task.cancelling():
                    raise asyncio.CancelledError from err
                self.ready = False
                log.warning("stream reader: redis unavailable (%s); retrying in %.2fs", err, delay)
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 2.0)

    async def restart_if_lost(self) -> None:
        """Back after an outage: if Redis lost the stream, start again at its end.

        A Redis restarted without persistence (or a failover to an empty
        replica) holds a stream that ends before what this reader had read.
        Reading on from there would still deliver the new items (their ids
        are later times), but until one came the gateway would give the lost
        stream's last id as ``subscribed``'s position, and a client resuming
        from it would be told of a loss that happened before it subscribed.
        The recent window goes too: its items are in no Redis any more.
        """
        end = await self.store.last_generated()
        # Unknown (XINFO refused) is not lost: starting again would send every
        # kept item to the live connections as new.
        if end is not None and end < self.hub.position:
            log.warning(
                "stream reader: redis lost the stream (it ends at %s, %s was read); "
                "starting again from its end",
                format_id(end),
                format_id(self.hub.position),
            )
            self.hub.start(end)

    def write_owed_now(self) -> None:
        """Reading failed: write what was already taken (it is in memory) and rest.

        Shares owed from the last pass would otherwise wait for Redis to come
        back; the background work waiting on the right of way need not.
        """
        try:
            if self.hub.owed:
                self.hub.dispatch([])
        finally:
            self.way.give()

    async def step(self, gather: float) -> None:
        """Read what is new (waiting for it unless shares are owed) and write it."""
        sent = self.clock()
        # Shares still owed (taken while the last pass was written): look, but
        # do not wait, for more before writing them.
        owed = bool(self.hub.owed)
        if not owed:
            self.way.give()
        entries = await self.store.read_new(
            self.hub.position, count=self.settings.read_batch, block_ms=None if owed else 5000
        )
        self.ready = True
        if entries or owed:
            self.way.take()
            # Only shares owed and nothing new: no burst to wait for.
            if gather and entries and self.burst(entries, self.clock() - sent, gather):
                entries = await self.gather(entries, gather)
            await self.dispatch(entries)

    def burst(self, entries: list[Entry], waited: float, linger: float) -> bool:
        """Whether to linger for more before dispatching ``entries``.

        Only while a burst is under way (the read found items waiting: it
        returned several, or came back at once), and only when writes are
        what costs (the last dispatch took longer than a linger): with few
        connections there is nothing to save, and the items go out at once.
        """
        return self.dispatch_seconds > linger and (len(entries) > 1 or waited < BURST_GAP)

    async def gather(self, entries: list[Entry], linger: float) -> list[Entry]:
        """A burst is under way: let more of it arrive before dispatching.

        Each connection then gets the burst in fewer, larger writes, and the
        number of writes is what a burst costs. The reader lingers ``linger``
        at a time while more keeps coming (until two lingers in a row found
        nothing), for up to twice as long as the last dispatch took (at most
        :data:`MAX_LINGER`): in ``wire run`` the publisher shares this loop,
        and a dispatch stalls it, so without this the next read would find
        little more than the dispatch let through; lingering twice as long
        as a dispatch lets the publisher have two thirds of the loop. A quiet
        wire never gets here: its reads wait for their item, which goes out
        at once.
        """
        budget = min(MAX_LINGER, max(linger, 2 * self.dispatch_seconds))
        deadline = self.clock() + budget
        empty = 0
        while len(entries) < self.settings.read_batch and empty < 2:
            await asyncio.sleep(linger)
            room = self.settings.read_batch - len(entries)
            after = entries[-1].key if entries else self.hub.position
            more = await self.store.read_new(after, count=room, block_ms=None)
            if more:
                entries += more
                empty = 0
            else:
                empty += 1
            if self.clock() >= deadline:
                break
        return entries

    async def dispatch(self, entries: list[Entry]) -> None:
        """Hand a batch to the hub and write what is owed; time it.

        Between the pass's turns the reader looks for new entries (see
        :meth:`between`); the metrics and the long polls get everything taken
        once the pass ends.
        """
        began = self.polled = self.clock()
        self.count(entries)
        try:
            await self.hub.dispatch_in_turns(entries, self.between)
        finally:
            taken, self.taken = self.taken, []
            if taken:
                self.observe(taken)
                self.arrivals.publish(taken)
        # Wall time, turns and what ran between them included: in ``wire run``
        # the publisher's requests then get their share of the linger too.
        self.dispatch_seconds = self.clock() - began

    def count(self, entries: list[Entry]) -> None:
        """``entries`` were taken: for the metrics and long polls, when the pass ends."""
        if entries:
            self.taken += entries
            self.batches += 1
            self.entries += len(entries)

    async def between(self) -> None:
        """Between two turns of a pass: every :data:`POLL_EVERY`, take what is new.

        What arrives during a long pass (10,000 connections) then reaches the
        connections the pass has not written yet in this pass, and the others
        in the next: each item within about one pass of its arrival, not two.
        """
        now = self.clock()
        # A pass takes in at most WIRE_READ_BATCH entries, its first read's
        # included: each connection's share, and its write, stay bounded as before.
        room = self.settings.read_batch - len(self.taken)
        if self.dispatch_seconds < LONG_PASS or now - self.polled < POLL_EVERY or room <= 0:
            await asyncio.sleep(0)
            return
        self.polled = now
        more = await self.store.read_new(self.hub.position, count=room, block_ms=None)
        self.hub.take(more)
        self.count(more)


READER = web.AppKey("reader", Reader)


async def reader_ctx(app: web.Application) -> AsyncIterator[None]:
    """The app's hub, its reader and keep-alive task, for the app's lifetime."""
    settings = app[SETTINGS]
    hub = Hub(
        max_buffer=settings.max_buffer,
        recent=settings.recent_items,
        recent_bytes=settings.recent_bytes,
        max_catchups=settings.max_catchups,
        tally=app[TALLY],
    )
    # The reader blocks for up to 5 s per XREAD, so it gets its own client
    # whose socket timeout is longer than that.
    assert settings.redis_url is not None
    redis = connect(settings.redis_url, socket_timeout=15.0)
    reader = Reader(Store(redis, settings), hub, settings, app[RIGHT_OF_WAY], app.get(ARRIVALS))
    app[HUB] = hub
    app[READER] = reader
    app[ARRIVALS] = reader.arrivals
    # Find the stream's end before serving, so subscribers have a position
    # from the first connection; if Redis is down the reader keeps trying.
    with contextlib.suppress(*REDIS_DOWN):
        async with asyncio.timeout(2):
            hub.start(await reader.store.last_key())
    # Supervised: restarted if they ever stop, and reported by /readyz meanwhile.
    supervisor = app[SUPERVISOR]
    supervisor.start("reader", reader.run)
    supervisor.start("keepalive", lambda: keepalive.run(hub, settings.ping_interval))
    yield
    await supervisor.stop("reader", "keepalive")
    await redis.aclose()
