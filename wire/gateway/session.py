"""One subscriber connection: its subscription, replies and catch-up.

Shared by both endpoints: the WebSocket handler feeds it client messages, the
SSE handler the one subscribe its URL asks for. A catch-up (``since``,
``backfill``) runs as the session's own task, reading through
:class:`~wire.gateway.replay.History`, while the hub holds live items.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import replace

import orjson
from aiohttp import web

from wire.core import frames
from wire.core.closecodes import CloseCode
from wire.core.entitlements import EVERYTHING, Grant
from wire.core.entry import Entry
from wire.core.errors import ClientError, RateLimited
from wire.core.ids import StreamKey
from wire.core.protocol import (
    PONG,
    Command,
    Ping,
    Subscribe,
    Subscription,
    Unsubscribe,
    error_message,
    parse_message,
    subscribed_message,
    truncated_message,
)
from wire.core.resume import (
    Latest,
    Since,
    Source,
    Window,
    is_truncated,
    narrowed,
    remainder,
    replay_window,
)
from wire.gateway.conn import Conn
from wire.gateway.reader import HUB
from wire.gateway.replay import History, merge, raise_if_cancelled
from wire.web.appkeys import SETTINGS, STORE
from wire.web.http import redis_unavailable

log = logging.getLogger("wire.gateway.session")

#: Catch-ups one connection may have under way at once (each a range to read).
MAX_CATCH_UPS = 8
#: Seconds a catch-up's socket may take nothing before the client counts as
#: gone: a ping interval, but never less than this (a client busy with the
#: pages it got may pause for longer than a short test interval).
MIN_STALL = 5.0


class Session:
    """One subscriber connection: its subscription, replies and catch-up."""

    # One per connection: slots keep it small (see docs/performance.md, memory).
    __slots__ = ("catching_up", "conn", "grant", "hub", "owed", "request", "store", "subscription")

    def __init__(self, request: web.Request, conn: Conn, grant: Grant = EVERYTHING) -> None:
        settings = request.app[SETTINGS]
        self.request = request
        self.grant = grant
        self.hub = request.app[HUB]
        self.store = request.app[STORE]
        self.conn = conn
        self.subscription = Subscription(max_tags=settings.max_tags, rate=settings.subscribe_rate)
        #: The catch-up being sent, as a task of its own so that the connection's
        #: reads (pongs above all) go on meanwhile; and what it owes the client.
        self.catching_up: asyncio.Task[None] | None = None
        self.owed: list[Source] = []
        self.hub.attach(conn)

    def reply(self, message: dict[str, object]) -> None:
        """Send a control message, ordered with the items around it."""
        payload = orjson.dumps(message)
        if self.conn.sse:
            event = str(message.get("type", "message"))
            self.hub.send(self.conn, frames.http_chunk(frames.sse_event(event, payload)))
        else:
            self.hub.send(self.conn, frames.ws_frame(payload))

    async def answer(self, message: str | Command) -> None:
        """Apply a client message (text, or already parsed), answering a ClientError in-band."""
        try:
            await self.handle(parse_message(message) if isinstance(message, str) else message)
        except ClientError as err:
            self.reply(error_message(err))

    def _position(self) -> StreamKey:
        """The cursor a ``subscribed`` reports: after every item sent before it.

        A reply jumps the hub's queue of a connection that is behind, so while
        items are queued the cursor is the last item actually written.
        """
        return self.conn.last_key if self.conn.held else self.hub.position

    async def handle(self, cmd: Command) -> None:
        """Apply one command; ClientErrors propagate to the caller to be answered.

        A subscribe with history returns once its catch-up has started, not
        when it has been sent: the catch-up runs as the session's task.
        """
        if isinstance(cmd, Ping):
            self.reply(PONG)
            return
        self.subscription.check_rate(time.monotonic())
        if isinstance(cmd, Unsubscribe):
            self.subscription.unsubscribe(cmd.tags)
            self.hub.retag(self.conn, self.subscription.keys)
            self._subscribed()
            return
        self.grant.check_subscription(cmd.tags)
        if self.hub.recent_base is None:
            # The reader has not found the stream's end yet: there is no
            # position to replay up to or to report, so the client retries.
            self.hub.close(self.conn, CloseCode.TRY_AGAIN_LATER, "gateway starting, retry")
            return
        if cmd.since is None and cmd.backfill is None and not self._holding_any():
            self.subscription.subscribe(cmd.tags, cmd.languages)
            if self.conn.holding is not None:
                # A catch-up under way has held nothing yet: it holds afresh
                # from here, so what it may drop later is all after this subscribe.
                self.hub.hand_over_held(self.conn)
            self.hub.retag(self.conn, self.subscription.keys)
            self._subscribed()
            return
        await self._catch_up(cmd)

    def _catching_up(self) -> bool:
        return self.catching_up is not None and not self.catching_up.done()

    def _holding_any(self) -> bool:
        """Live items are held (or were dropped) for the catch-up under way."""
        holding = self.conn.holding
        return holding is not None and not holding.empty

    def _subscribed(self) -> None:
        """Tell the client its subscription (tags and any language filter) as it now is."""
        sub = self.subscription
        self.reply(subscribed_message(sub.tags, self._position(), sub.languages))

    async def _catch_up(self, cmd: Subscribe) -> None:
        """Subscribe with history: start a catch-up, taking over one still running.

        The catch-up under way is stopped and what it still owed (its sources
        after the last item written, and the window of the stream the live
        items held for it fell in) is merged into the new one, so nothing is
        lost or sent twice and nothing held escapes the connection's cap.

        A plain subscribe during a catch-up that holds live items comes here
        too, and owes no history of its own: the held window is owed for the
        tags it was held for. Left to the holding, an overflow after it would
        read that window again for the new tags too, and send their items from
        before their ``subscribed``. (One that holds nothing yet needs no
        takeover, which would read the owed history's next pages again: a
        client that reads nothing could have had Redis read them 20 times a
        second. Each takeover here adds a window owed, so at most
        ``MAX_CATCH_UPS`` of them come before the client reads on.)
        """
        running = self._catching_up()
        if running and len(self.owed) >= MAX_CATCH_UPS:
            raise RateLimited(
                f"more than {MAX_CATCH_UPS} catch-ups at once on this connection (history "
                "it has not read yet, and what was held for it meanwhile); this subscribe "
                "changed nothing: read on, and send it again later"
            )
        self.subscription.subscribe(cmd.tags, cmd.languages)
        keys, held_for = self.subscription.keys, self.conn.keys
        owed = await self.stop()
        # No await from here on: no item can slip in between the held items
        # taken, the new tags and the position the new history ends at.
        self.hub.begin_replay(self.conn)
        held = self.hub.hand_over_held(self.conn)
        if held is not None:
            # Live items held (or dropped) so far, for the tags they were held
            # for, read again from the stream: kept here as entries they would
            # no longer count against the connection's cap.
            owed.append(Since(held, held_for))
        self.hub.retag(self.conn, keys)
        self._subscribed()
        if cmd.since is not None or cmd.backfill is not None:
            owed.append(self._source(cmd, keys))
        self.owed = owed
        self.catching_up = asyncio.create_task(self._run(), name="wire-catch-up")

    def _source(self, cmd: Subscribe, keys: frozenset[str]) -> Source:
        """The history a subscribe asks for, up to what the hub has dispatched."""
        position = self.hub.position
        if cmd.since is not None:
            window = replay_window(cmd.since, self.conn.last_key, position)
            return Since(window, keys, cmd.compact, unchecked=cmd.since)
        assert cmd.backfill
        return Latest(keys, cmd.backfill, position)

    async def stop(self) -> list[Source]:
        """Stop a running catch-up; return what it still owed (nothing when it had
        finished), for the tags still subscribed.

        A tag unsubscribed during the catch-up is left out of what it owed: its
        history was being skipped, and a later subscribe to it (without history)
        must not bring that history back.
        """
        task, self.catching_up = self.catching_up, None
        if task is None or task.done():
            return []
        task.cancel()
        await asyncio.wait([task])
        sent, keys = self.conn.last_key, self.conn.keys
        owed: list[Source] = []
        for source in self.owed:
            rest = remainder(source, sent)
            if rest is not None and (rest := narrowed(rest, keys)) is not None:
                owed.append(rest)
        return owed

    def end(self) -> None:
        """The connection is over: stop its catch-up and leave the hub."""
        if self.catching_up is not None:
            self.catching_up.cancel()
        self.hub.detach(self.conn)

    async def _run(self) -> None:
        """Send what is owed, then what arrived meanwhile, then go live."""
        settings = self.request.app[SETTINGS]
        history = History(self.hub, self.store, settings.compact_stories, self.hub.catchups)
        try:
            await self._check_retention()
            while await self._send_owed(history):
                # Live items held meanwhile overflowed: what they were is owed
                # from the stream (see wire.gateway.holding), then held anew.
                dropped = self.hub.end_replay(self.conn)
                if dropped is None:
                    break
                self.owed = [Since(dropped, self.conn.keys)]
        except Exception as err:
            if redis_unavailable(err):  # unreachable, or up and refusing (BUSY)
                # A cancel (a new subscribe took over) can come out of redis-py
                # as a ConnectionError: that is no reason to close.
                raise_if_cancelled()
                # Going live now would skip the history we could not read; the
                # client resumes with since and loses nothing.
                self.hub.close(self.conn, CloseCode.TRY_AGAIN_LATER, "history unavailable, retry")
                return
            # Left as it is the connection would hold live items until 4008.
            log.exception("catch-up failed")
            self.hub.close(self.conn, CloseCode.INTERNAL_ERROR, "internal error")
            return
        finally:
            history.release()
        self.owed = []

    async def _send_owed(self, history: History) -> bool:
        """Send the pages of every source owed; False if the connection closed meanwhile."""
        # Batches of a quarter of the cap: what a batch leaves unsent plus a
        # keep-alive or a reply queued behind it stays under the cap.
        batches = merge([history.pages(s) for s in self.owed], self.hub.max_buffer // 4)
        async with contextlib.aclosing(batches) as pages:
            async for page in pages:
                for part in history.cut(page):
                    if isinstance(part, Window):
                        self._tell_gap(part)
                        continue
                    await self._send(part)
                    if self.conn.closed:
                        return False
        for gap in history.rest():
            self._tell_gap(gap)
        return True

    def _tell_gap(self, gap: Window) -> None:
        """Retention removed ``gap`` before the catch-up read it: ``history_truncated``.

        The catch-up reads slower than retention trims (a client that reads
        its history slowly while the stream is at its length limit), or a held
        window read again after retention passed it.
        """
        self.reply(truncated_message(gap.after, gap.upto))

    async def _check_retention(self) -> None:
        """Say ``history_truncated`` (once per ``since``) and skip what is lost.

        Retention removed those items on every gateway (or Redis lost them,
        see :meth:`Kept.lost_upto`); one that still has some in memory must
        not send them (nor contradict the error).
        """
        for i, source in enumerate(self.owed):
            if isinstance(source, Since) and source.unchecked is not None:
                since, window = source.unchecked, source.window
                lost = (await self.store.kept()).lost_upto(since)
                if is_truncated(since, lost):
                    self.reply(truncated_message(since, lost))
                    window = Window(max(window.after, lost), window.upto)
                self.owed[i] = replace(source, window=window, unchecked=None)

    async def _send(self, entries: list[Entry]) -> None:
        """Write a page of history once the socket took the last one.

        Only items of tags still subscribed: an unsubscribe may have come
        while the catch-up ran.
        """
        raise_if_cancelled()
        keys = self.conn.keys
        self.hub.write(self.conn, [e for e in entries if e.matches(keys)])
        await self._drained()

    async def _drained(self) -> None:
        """Wait until the socket took the last page; close a client that takes nothing.

        A client that asks for history and never reads (an SSE
        ``Last-Event-ID: 0-0`` left unread, a WebSocket with pongs sent but
        nothing read) would keep its turn at Redis and a page in memory for
        good: once its socket has taken nothing for a ping interval (at least
        :data:`MIN_STALL`), it is a slow consumer. A slow reader that makes
        progress waits on.
        """
        stall = max(self.request.app[SETTINGS].ping_interval, MIN_STALL)
        while True:
            unsent = self.conn.transport.get_write_buffer_size()
            try:
                async with asyncio.timeout(stall):
                    await self.hub.caught_up(self.conn)
                return
            except TimeoutError:
                if self.conn.transport.get_write_buffer_size() >= unsent:
                    self.hub.close(self.conn, CloseCode.SLOW_CONSUMER, "slow consumer")
                    return
