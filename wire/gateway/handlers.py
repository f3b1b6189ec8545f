"""The gateway's asyncio edge: one stream reader, WebSocket and SSE endpoints.

Per process there is one task reading the item stream (a blocking ``XREAD``)
and one :class:`~wire.fanout.Hub` routing what it reads. Connection handlers
only parse client messages, change subscriptions and replay history; live
delivery never passes through them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import replace

import orjson
from aiohttp import WSMessage, WSMsgType, web
from multidict import MultiDict

from wire.core import frames
from wire.core.closecodes import CloseCode
from wire.core.entitlements import EVERYTHING, Grant, reader_grant
from wire.core.entry import Entry
from wire.core.errors import (
    ClientError,
    Forbidden,
    InvalidMessage,
    RateLimited,
    TooManyConnections,
    quoted,
)
from wire.core.ids import StreamKey
from wire.core.protocol import (
    PONG,
    Ping,
    Subscribe,
    Subscription,
    Unsubscribe,
    error_message,
    parse_message,
    parse_subscribe,
    subscribed_message,
    truncated_message,
)
from wire.core.resume import (
    Held,
    Latest,
    Since,
    Source,
    Window,
    is_truncated,
    remainder,
    replay_window,
)
from wire.core.tokens import bearer
from wire.gateway import wsedge
from wire.gateway.hub import Conn, Hub
from wire.gateway.replay import History, merge, raise_if_cancelled
from wire.runtime.settings import Settings
from wire.runtime.supervisor import SUPERVISOR
from wire.storage.store import Store, connect
from wire.web.appkeys import ENTITLEMENTS, SETTINGS, STORE
from wire.web.http import REDIS_DOWN, error_response

log = logging.getLogger("wire.gateway.handlers")

HUB = web.AppKey("hub", Hub)
#: Catch-ups one connection may have under way at once (each a range to read).
MAX_CATCH_UPS = 8


class Reader:
    """The one stream reader of a gateway process, with its readiness."""

    def __init__(self, store: Store, hub: Hub, settings: Settings) -> None:
        self.store = store
        self.hub = hub
        self.settings = settings
        self.ready = False
        self.errors = 0
        #: Called with each dispatched batch (metrics set it); a no-op by default.
        self.observe: Callable[[Sequence[Entry]], None] = lambda entries: None

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
                    self.ready = True
                entries = await self.store.read_new(
                    self.hub.position, count=self.settings.read_batch, block_ms=5000
                )
                self.ready, delay = True, 0.05
                if entries:
                    self.hub.dispatch(entries)
                    self.observe(entries)
                    if len(entries) > 1 and gather:
                        # A burst is under way: let more of it arrive, so each
                        # connection gets it in fewer, larger writes.
                        await asyncio.sleep(gather)
            except REDIS_DOWN as err:
                if task is not None and task.cancelling():
                    raise asyncio.CancelledError from err
                self.ready = False
                self.errors += 1
                log.warning("stream reader: redis unavailable (%s); retrying in %.2fs", err, delay)
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 2.0)
            except Exception:
                # A bug must not silently end delivery for the whole process.
                # Retrying the batch is safe: each connection's last_key keeps
                # whatever part of it was already written from going out twice.
                self.errors += 1
                log.exception("stream reader: unexpected error; retrying")
                await asyncio.sleep(1.0)


READER = web.AppKey("reader", Reader)


def setup_gateway(app: web.Application) -> None:
    """Add the gateway's routes and its reader to ``app``."""
    app.router.add_get("/v1/ws", ws_handler)
    app.router.add_get("/v1/sse", sse_handler)
    app.cleanup_ctx.append(_reader_ctx)
    app.on_shutdown.append(_close_all)


async def _close_all(app: web.Application) -> None:
    """On shutdown, tell every client to go elsewhere (1001) before handlers stop."""
    hub = app[HUB]
    for conn in list(hub.conns):
        hub.close(conn, CloseCode.GOING_AWAY, "server shutting down")


async def _reader_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    hub = Hub(
        max_buffer=settings.max_buffer,
        recent=settings.recent_items,
        recent_bytes=settings.recent_bytes,
    )
    # The reader blocks for up to 5 s per XREAD, so it gets its own client
    # whose socket timeout is longer than that.
    assert settings.redis_url is not None
    redis = connect(settings.redis_url, socket_timeout=15.0)
    reader = Reader(Store(redis, settings), hub, settings)
    app[HUB] = hub
    app[READER] = reader
    # Find the stream's end before serving, so subscribers have a position
    # from the first connection; if Redis is down the reader keeps trying.
    with contextlib.suppress(*REDIS_DOWN):
        async with asyncio.timeout(2):
            hub.start(await reader.store.last_key())
    # Supervised: restarted if they ever stop, and reported by /readyz meanwhile.
    supervisor = app[SUPERVISOR]
    supervisor.start("reader", reader.run)
    supervisor.start("keepalive", lambda: _keepalive(hub, settings.ping_interval))
    yield
    await supervisor.stop("reader", "keepalive")
    await redis.aclose()


async def _keepalive(hub: Hub, interval: float) -> None:
    """Keep-alives for every connection from one task: WebSocket pings, SSE comments."""
    chunk = frames.http_chunk(frames.sse_comment("keep-alive"))
    while True:
        await asyncio.sleep(interval / 2)
        # Pinged over half the interval, so each has at least that long to answer.
        await hub.keepalive(chunk, spread=interval / 2)


def _admit(request: web.Request) -> Grant:
    """Token, Origin and connection-limit checks, before any upgrade."""
    settings = request.app[SETTINGS]
    grant = reader_grant(
        bearer(request.headers, request.query),
        settings.subscriber_tokens,
        request.app[ENTITLEMENTS],
        also=settings.editor_tokens,  # whoever may publish may read
    )
    origin = request.headers.get("Origin")
    if settings.allowed_origins and origin is not None and origin not in settings.allowed_origins:
        raise Forbidden(f"origin {quoted(origin)} is not allowed")
    if len(request.app[HUB].conns) >= settings.max_connections:
        raise TooManyConnections("this gateway is at its connection limit; try another or retry")
    return grant


async def ws_handler(request: web.Request) -> web.StreamResponse:
    """``GET /v1/ws``: the WebSocket subscriber protocol."""
    settings = request.app[SETTINGS]
    if (wrong_version := wsedge.refuse_version(request)) is not None:
        return wrong_version
    try:
        grant = _admit(request)
        initial = _query_subscribe(request)
        if initial is not None:
            grant.check_subscription(initial.tags)
    except ClientError as err:
        return error_response(err.status, err.as_dict())
    # aiohttp refuses a message of max_msg_size bytes or more; the limit is
    # "more than max_frame bytes", so a message of exactly max_frame passes.
    # No per-connection heartbeat: the hub pings every connection from one
    # task (_keepalive), which saves ~600 bytes per connection; autoping is off
    # so the pongs reach the loop below, which also answers the client's pings.
    ws = wsedge.GuardedResponse(autoping=False, max_msg_size=settings.max_frame + 1, compress=False)
    await ws.prepare(request)
    assert request.transport is not None
    _limit_send_buffer(request, settings.send_buffer)
    session = Session(request, Conn(request.transport, grant=grant), grant)
    ws.bind(session.hub, session.conn)  # unmasked frames, bad close codes: 1002
    try:
        if initial is not None:
            await session.answer(initial)
        async for msg in ws:
            if session.conn.closed:
                break
            if msg.type == WSMsgType.TEXT:
                await session.handle_text(msg.data)
            elif msg.type == WSMsgType.BINARY:
                session.reply(
                    error_message(
                        InvalidMessage("binary frames are not accepted; send JSON text frames")
                    )
                )
            elif msg.type in (WSMsgType.PING, WSMsgType.PONG):
                _ping_pong(session.hub, session.conn, msg)
    finally:
        session.end()
    return ws


def _ping_pong(hub: Hub, conn: Conn, msg: WSMessage) -> None:
    """Answer a client's ping; note a pong to the hub's keep-alive ping."""
    if msg.type == WSMsgType.PING:
        hub.send(conn, frames.ws_pong(msg.data))
    else:
        hub.pong(conn)


def _query_int(raw: str) -> int | str:
    """A query value as an int when it is a short ASCII number, else as given.

    The validator then answers anything else; ``str.isdigit`` would let "²"
    or thousands of digits through to ``int()``, which raises.
    """
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 9 else raw


def _query_subscribe(request: web.Request) -> Subscribe | None:
    """``/v1/ws?tags=a,b&since=ID`` (or ``backfill=N``) as a subscribe at connect time."""
    tags = request.query.get("tags")
    if tags is None:
        return None
    return _subscribe_from(request.query, tags, request.query.get("since"))


def _subscribe_from(query: Mapping[str, str], tags: str, since: str | None) -> Subscribe:
    """The subscribe a query string asks for (WebSocket shortcut and SSE alike)."""
    msg: dict[str, object] = {"tags": [t for t in tags.split(",") if t.strip()]}
    if since:
        msg["since"] = since
    if "backfill" in query:
        msg["backfill"] = _query_int(query["backfill"])
    if "compact" in query:
        msg["compact"] = query["compact"] in ("1", "true")
    return parse_subscribe(msg)


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

    async def handle_text(self, data: str) -> None:
        try:
            await self.handle(parse_message(data))
        except ClientError as err:
            self.reply(error_message(err))

    async def answer(self, cmd: Subscribe | Unsubscribe | Ping) -> None:
        """Apply a command, answering a ClientError (e.g. too many tags) in-band."""
        try:
            await self.handle(cmd)
        except ClientError as err:
            self.reply(error_message(err))

    def _position(self) -> StreamKey:
        """The cursor a ``subscribed`` reports: after every item sent before it.

        A reply jumps the hub's queue of a connection that is behind, so while
        items are queued the cursor is the last item actually written.
        """
        return self.conn.last_key if self.conn.held else self.hub.position

    async def handle(self, cmd: Subscribe | Unsubscribe | Ping) -> None:
        """Apply one command; ClientErrors propagate to the caller to be answered.

        A subscribe with history returns once its catch-up has started, not
        when it has been sent: the catch-up runs as the session's task.
        """
        if isinstance(cmd, Ping):
            self.reply(PONG)
            return
        self.subscription.check_rate(time.monotonic())
        if isinstance(cmd, Unsubscribe):
            self.hub.retag(self.conn, self.subscription.unsubscribe(cmd.tags))
            self.reply(subscribed_message(self.subscription.tags, self._position()))
            return
        self.grant.check_subscription(cmd.tags)
        if self.hub.recent_base is None:
            # The reader has not found the stream's end yet: there is no
            # position to replay up to or to report, so the client retries.
            self.hub.close(self.conn, CloseCode.TRY_AGAIN_LATER, "gateway starting, retry")
            return
        if cmd.since is None and cmd.backfill is None:
            # During a catch-up the new tags' items are held with the rest.
            keys = self.subscription.subscribe(cmd.tags)
            self.hub.retag(self.conn, keys)
            self.reply(subscribed_message(keys, self._position()))
            return
        await self._catch_up(cmd)

    async def _catch_up(self, cmd: Subscribe) -> None:
        """Subscribe with history: start a catch-up, taking over one still running.

        The catch-up under way is stopped and what it still owed (its sources
        after the last item written, and the live items held for it) is
        merged into the new one, so nothing is lost or sent twice.
        """
        running = self.catching_up is not None and not self.catching_up.done()
        if running and sum(not isinstance(s, Held) for s in self.owed) >= MAX_CATCH_UPS:
            raise RateLimited(
                f"more than {MAX_CATCH_UPS} catch-ups at once on this connection; "
                "send this subscribe again once one has finished"
            )
        keys = self.subscription.subscribe(cmd.tags)
        owed = await self.stop()
        # No await from here on: no item can slip in between the held items
        # taken, the new tags and the position the new history ends at.
        self.hub.begin_replay(self.conn)
        held = [e for s in owed if isinstance(s, Held) for e in s.entries]
        held += self.hub.take_replay_buffer(self.conn)
        owed = [s for s in owed if not isinstance(s, Held)]
        if held:
            owed.append(Held(tuple(held)))
        self.hub.retag(self.conn, keys)
        self.reply(subscribed_message(keys, self._position()))
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
        """Stop a running catch-up; return what it still owed (nothing when it had finished)."""
        task, self.catching_up = self.catching_up, None
        if task is None or task.done():
            return []
        task.cancel()
        await asyncio.wait([task])
        sent = self.conn.last_key
        return [rest for s in self.owed if (rest := remainder(s, sent)) is not None]

    def end(self) -> None:
        """The connection is over: stop its catch-up and leave the hub."""
        if self.catching_up is not None:
            self.catching_up.cancel()
        self.hub.detach(self.conn)

    async def _run(self) -> None:
        """Send what is owed, then what arrived meanwhile, then go live."""
        history = History(self.hub, self.store, self.request.app[SETTINGS].compact_stories)
        try:
            await self._check_retention()
            async with contextlib.aclosing(merge([history.pages(s) for s in self.owed])) as pages:
                async for page in pages:
                    await self._send(page)
                    if self.conn.closed:
                        return
        except REDIS_DOWN:
            # A cancel (a new subscribe took over) can come out of redis-py
            # as a ConnectionError: that is no reason to close.
            raise_if_cancelled()
            # Going live now would skip the history we could not read; the
            # client resumes with since and loses nothing.
            self.hub.close(self.conn, CloseCode.TRY_AGAIN_LATER, "history unavailable, retry")
            return
        except Exception:
            # Left as it is the connection would hold live items until 4008.
            log.exception("catch-up failed")
            self.hub.close(self.conn, CloseCode.INTERNAL_ERROR, "internal error")
            return
        self.owed = []
        self.hub.end_replay(self.conn)

    async def _check_retention(self) -> None:
        """Say ``history_truncated`` (once per ``since``) and skip what retention removed.

        Retention removed those items on every gateway; one that still has
        some in memory must not send them (nor contradict the error).
        """
        for i, source in enumerate(self.owed):
            if isinstance(source, Since) and source.unchecked is not None:
                since, window = source.unchecked, source.window
                trimmed = await self.store.trimmed_before()
                if is_truncated(since, trimmed):
                    self.reply(truncated_message(since, trimmed))
                    window = Window(max(window.after, trimmed), window.upto)
                self.owed[i] = replace(source, window=window, unchecked=None)

    async def _send(self, entries: list[Entry]) -> None:
        """Write a page of history once the socket took the last one.

        Only items of tags still subscribed: an unsubscribe may have come
        while the catch-up ran.
        """
        raise_if_cancelled()
        keys = self.conn.keys
        self.hub.write(self.conn, [e for e in entries if e.matches(keys)])
        await self.hub.caught_up(self.conn)


def _limit_send_buffer(request: web.Request, size: int) -> None:
    """Cap the kernel's send buffer for a subscriber socket.

    Linux autotunes it up to several MiB, where data can neither be
    reprioritized (urgent items) nor counted against the slow-consumer cap;
    a modest fixed size keeps the backlog in the hub, where both happen.
    """
    sock = request.transport.get_extra_info("socket") if request.transport else None
    if size > 0 and sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)


async def sse_handler(request: web.Request) -> web.StreamResponse:
    """``GET /v1/sse?tags=a,b``: Server-Sent Events with Last-Event-ID resume."""
    try:
        grant = _admit(request)
        cmd = _sse_subscribe(request)
        grant.check_subscription(cmd.tags)
    except ClientError as err:
        return error_response(err.status, err.as_dict())
    resp = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    assert request.transport is not None
    _limit_send_buffer(request, request.app[SETTINGS].send_buffer)
    session = Session(request, Conn(request.transport, sse=True, grant=grant), grant)
    closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_close(code: int, reason: str) -> None:
        if not closed.done():
            closed.set_result(None)

    session.conn.on_close = on_close
    session.hub.send(session.conn, frames.http_chunk(b"retry: 1000\n\n"))
    try:
        await session.handle(cmd)
        await closed
    except ClientError as err:
        session.reply(error_message(err))
    finally:
        session.end()
    return resp


def _sse_subscribe(request: web.Request) -> Subscribe:
    """``/v1/sse?tags=a,b`` (everything without tags), resuming from Last-Event-ID.

    An ``EventSource`` reconnects to the URL it was opened with and adds
    ``Last-Event-ID``: the header says where it got to, so the URL's
    ``since`` and ``backfill`` no longer apply. (Since with backfill would be
    a 400, and a browser never retries a 4xx: the feed would stop for good.)
    """
    q = MultiDict(request.query)
    resume = request.headers.get("Last-Event-ID")
    if resume:
        q.popall("since", None)
        q.popall("backfill", None)
    return _subscribe_from(q, q.get("tags", "*"), resume or q.get("since"))
