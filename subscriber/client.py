"""``connect()`` and the :class:`Feed` it returns: a self-healing subscription.

The feed is pull-based: it reads from the socket only when the application
asks for the next item. So an application that falls behind pushes back on
the gateway like any slow reader (and is eventually closed with 4008 "slow
consumer"), and "seen" can mean "yielded": on every reconnect the feed
resumes with ``since`` = the id of the last item it yielded, and drops
anything not newer than that. Whatever the server or the network do, the
application gets each matching item once, in stream order (unless retention
removed it before it could be replayed: that is told as HistoryTruncated).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from collections import deque
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import orjson
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from subscriber.cursor import CursorFile, StreamKey, stream_key
from subscriber.errors import AuthError, ProtocolError, RefusedError, SubscriptionError
from subscriber.items import Event, parse_event
from subscriber.languages import language_matches, normalize_languages
from subscriber.notices import Disconnected, HistoryTruncated, Notice, Subscribed, log_notice
from subscriber.tags import matches, normalize_tags

Change = Literal["subscribe", "unsubscribe"]
Op = tuple[Change, frozenset[str]]

#: Failures a later attempt may not meet: network trouble, a server restarting
#: or overloaded (5xx, 429), a close for any reason.
RETRYABLE = (OSError, TimeoutError, EOFError, InvalidHandshake, ConnectionClosed)
MAX_MESSAGE = 4 * 1024 * 1024
#: Urgent items received ahead of their turn that the library remembers (to
#: yield each once when its in-order copy comes).
MAX_AHEAD = 10_000
STABLE_AFTER = 10.0  # seconds


def connect(
    url: str,
    tags: Iterable[str],
    *,
    token: str | None = None,
    languages: Iterable[str] = (),
    since: str | None = None,
    backfill: int | None = None,
    cursor_file: str | os.PathLike[str] | None = None,
    on_notice: Callable[[Notice], None] | None = None,
    min_delay: float = 0.25,
    max_delay: float = 30.0,
    open_timeout: float = 10.0,
    batch: bool = True,
) -> Feed:
    """Subscribe to ``tags`` on the gateway at ``url``; use as ``async with``.

    ``url`` is the WebSocket endpoint (``ws://host:8080/v1/ws``); an
    ``http(s)://host:port`` base is accepted too. ``since`` starts after that
    item id; ``backfill`` starts with the latest N matching items; with
    neither, the feed starts live (and, if the connection drops before the
    first item, resumes from the server's time of that first connection, so
    a quiet feed loses nothing either). ``cursor_file`` keeps the id of the last
    item the application finished with, so a new process continues where
    the old one stopped (it takes precedence over ``since``). Reconnect
    delays are drawn at random up to ``min_delay * 2**attempt``, capped at
    ``max_delay`` seconds. ``on_notice`` receives :mod:`subscriber.notices`
    (connection lost, history truncated...); by default they are logged.
    ``languages`` (BCP 47 tags such as ``en``, ``pt-BR``) limits the feed to
    items in those languages, on top of the tags (both must match); a tag
    matches exactly, case aside: ``en`` does not include ``en-GB``.
    ``batch`` asks the gateway for batched frames (``?batch=1``: in a burst
    several items to a frame, one message per line), which costs this process
    less per item; the feed yields the same events either way.
    """
    return Feed(
        websocket_url(url),
        _normalize(tags),
        token=token,
        languages=normalize_languages(languages),
        since=since,
        backfill=backfill,
        cursor=CursorFile(cursor_file) if cursor_file is not None else None,
        on_notice=on_notice or log_notice,
        backoff=Backoff(min_delay, max_delay),
        open_timeout=open_timeout,
        batch=batch,
    )


def websocket_url(url: str) -> str:
    """``http://host:8080`` as ``ws://host:8080/v1/ws``; WebSocket URLs unchanged."""
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(f"not a ws://, wss:// or http(s):// URL: {url!r}")
    path = parts.path if parts.path not in ("", "/") else "/v1/ws"
    return urlunsplit((scheme, parts.netloc, path, parts.query, ""))


def _with_query(url: str, pair: str) -> str:
    """``url`` with ``pair`` (``name=value``) added to its query, unless the URL names it."""
    parts = urlsplit(url)
    name = pair.partition("=")[0]
    if any(p.partition("=")[0] == name for p in parts.query.split("&")):
        return url
    query = f"{parts.query}&{pair}" if parts.query else pair
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def _normalize(tags: Iterable[str]) -> frozenset[str]:
    """Tags in the server's canonical form, so local filtering agrees with it."""
    return normalize_tags(tags)


class Backoff:
    """Jittered exponential delays ("full jitter"), capped; reset by a connection that held."""

    def __init__(self, min_delay: float, max_delay: float) -> None:
        self.min_delay = min_delay
        self.max_delay = max_delay
        self.attempt = 0

    def next(self) -> float:
        # Random over the whole range, so clients dropped together by one
        # gateway restart do not come back together.
        ceiling = min(self.max_delay, self.min_delay * 2**self.attempt)
        self.attempt = min(self.attempt + 1, 32)
        return random.uniform(0, ceiling)

    def reset(self) -> None:
        self.attempt = 0


class Feed:
    """A live subscription: ``async for event in feed`` yields Items and Withdrawals."""

    def __init__(
        self,
        url: str,
        tags: frozenset[str],
        *,
        token: str | None,
        languages: frozenset[str] = frozenset(),
        since: str | None,
        backfill: int | None,
        cursor: CursorFile | None,
        on_notice: Callable[[Notice], None],
        backoff: Backoff,
        open_timeout: float,
        batch: bool = False,
    ) -> None:
        #: Where the next connection goes (an application may change it to fail over).
        self.url = url
        self._batch = batch
        self._token = token
        self._languages = languages
        self._backfill = backfill
        self._cursor = cursor
        self._notify = on_notice
        self._backoff = backoff
        self._open_timeout = open_timeout
        # The tags are the server-confirmed set with the changes it has not
        # answered yet applied in order; each answer retires the oldest change.
        self._confirmed: frozenset[str] = frozenset()
        self._ops: deque[Op] = deque([("subscribe", tags)])
        self._last: StreamKey | None = None
        self._last_id: str | None = None
        self._origin: str | None = None
        #: Ids of urgent items received ahead of their turn (not yet passed by the cursor).
        self._ahead: set[str] = set()
        # A cursor file that holds an id is newer news than the ``since`` argument.
        self._start((cursor.load() if cursor is not None else None) or since)
        self._uncommitted: str | None = None
        #: Messages received and not yet handled: a batched frame holds several,
        #: and items that came before a connection's answer wait here too.
        self._lines: deque[bytes] = deque()
        self._ws: ClientConnection | None = None
        self._connected_at = 0.0
        self._closed = False
        self._closing = asyncio.Event()

    def _start(self, since: str | None) -> None:
        if since is not None:
            self._last, self._last_id = stream_key(since), since

    @property
    def tags(self) -> tuple[str, ...]:
        """The subscribed tags, including changes the server has not confirmed yet."""
        tags = self._confirmed
        for kind, change in self._ops:
            tags = tags | change if kind == "subscribe" else tags - change
        return tuple(sorted(tags))

    @property
    def languages(self) -> tuple[str, ...]:
        """The languages asked for (empty: every language)."""
        return tuple(sorted(self._languages))

    @property
    def last_id(self) -> str | None:
        """The id of the last item yielded (or the starting ``since``/cursor)."""
        return self._last_id

    async def __aenter__(self) -> Feed:
        try:
            await self._connect()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Leaving normally (or by break) means the last item was handled;
        # leaving by an exception means it may not have been, so a restart
        # with the cursor file gets it again.
        if exc_type is None:
            self._commit()
        await self.close()

    async def close(self) -> None:
        """Close the connection and end the iteration; safe to call twice."""
        self._closed = True
        self._closing.set()
        ws, self._ws = self._ws, None
        if ws is not None:
            await ws.close()

    def __aiter__(self) -> Feed:
        return self

    async def __anext__(self) -> Event:
        self._commit()
        while not self._closed:
            if self._lines:
                # One message at a time, as if each had a frame of its own: the
                # checks in _accept see the cursor of everything yielded before.
                event = self._receive(self._lines.popleft())
                if event is not None:
                    return self._yield(event)
                continue
            ws = self._ws or await self._connect()
            if ws is None:
                break
            try:
                raw = await ws.recv(decode=False)
            except ConnectionClosed as closed:
                if not self._closed:
                    await self._lost(closed)
                continue
            self._lines.extend(_messages(raw))
        raise StopAsyncIteration

    async def subscribe(self, tags: Iterable[str]) -> None:
        """Add tags (kept across reconnects); their items flow once the server has it."""
        await self._change("subscribe", _normalize(tags))

    async def unsubscribe(self, tags: Iterable[str]) -> None:
        """Remove tags; items of theirs already on the way are not yielded."""
        await self._change("unsubscribe", _normalize(tags))

    async def _change(self, kind: Change, tags: frozenset[str]) -> None:
        if self._closed:
            raise RuntimeError("the feed is closed")
        self._ops.append((kind, tags))
        ws = self._ws
        if ws is None:
            return  # the next connection subscribes to self.tags, which has the change
        with contextlib.suppress(ConnectionClosed):
            await ws.send(orjson.dumps({"type": kind, "tags": sorted(tags)}).decode())

    # -- connecting ---------------------------------------------------------

    async def _connect(self) -> ClientConnection | None:
        """Connect and subscribe, retrying with backoff; None if closed meanwhile."""
        while not self._closed:
            try:
                ws = await self._establish()
            except RETRYABLE as err:
                await self._pause(None, _describe(err), at_least=_retry_after(err))
                continue
            self._connected_at = time.monotonic()
            return ws
        return None

    async def _establish(self) -> ClientConnection:
        ws = await self._handshake()
        # No await from reading the tags to publishing the connection in
        # self._ws: a subscribe() in between would be lost.
        tags = frozenset(self.tags)
        self._confirmed, self._ops = frozenset(), deque([("subscribe", tags)])
        self._ws = ws
        message: dict[str, object] = {"type": "subscribe", "tags": sorted(tags)}
        if self._languages:
            message["languages"] = sorted(self._languages)
        since = self._last_id or self._origin
        if since is not None:
            message["since"] = since
        elif self._backfill:
            message["backfill"] = self._backfill
        try:
            await ws.send(orjson.dumps(message).decode())
            async with asyncio.timeout(self._open_timeout):
                await self._await_answer(ws, self._ops[0])
        except SubscriptionError:
            raise  # connected, but subscribed to nothing; the application decides
        except BaseException:
            self._ws = None
            ws.transport.abort()
            raise
        if self._closed:  # close() ran during the handshake
            self._ws = None
            await ws.close()
        return ws

    async def _await_answer(self, ws: ClientConnection, first: Op) -> None:
        """Read until the server answered the subscribe sent on connecting.

        Items that come first (not from this server, but never drop one) wait
        in ``_lines`` and are checked against the cursor only when their turn
        comes: a connection that dropped before answering and the next one may
        both send them, and the second copy must meet the cursor the first moved.
        """
        while self._ops and self._ops[0] is first:
            for message in _messages(await ws.recv(decode=False)):
                if _is_item(message):
                    self._lines.append(message)
                else:
                    self._receive(message)

    async def _handshake(self) -> ClientConnection:
        headers = {"Authorization": f"Bearer {self._token}"} if self._token else None
        try:
            return await ws_connect(
                _with_query(self.url, "batch=1") if self._batch else self.url,
                additional_headers=headers,
                open_timeout=self._open_timeout,
                close_timeout=2.0,
                max_size=MAX_MESSAGE,
            )
        except InvalidStatus as err:
            refusal = _refusal(err)
            if refusal is None:
                raise
            raise refusal from None

    async def _lost(self, closed: ConnectionClosed) -> None:
        self._ws = None
        # Only a connection that held for a while makes the next delay short
        # again: one that a struggling gateway accepts and drops at once
        # (1013 "try again later") must not be retried at full speed.
        if time.monotonic() - self._connected_at >= STABLE_AFTER:
            self._backoff.reset()
        rcvd = closed.rcvd
        if rcvd is None:
            await self._pause(None, "connection lost")
        else:
            await self._pause(rcvd.code, rcvd.reason)

    async def _pause(self, code: int | None, reason: str, *, at_least: float = 0.0) -> None:
        """Tell the application, then wait before the next attempt (unless closed).

        ``at_least``: what a refusal's ``Retry-After`` asked for (within ``max_delay``).
        """
        delay = max(self._backoff.next(), min(at_least, self._backoff.max_delay))
        self._notify(Disconnected(code, reason, delay))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._closing.wait()

    # -- receiving ----------------------------------------------------------

    def _receive(self, raw: bytes) -> Event | None:
        """Handle one server message; return the event to yield, if any."""
        try:
            msg = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise ProtocolError(f"the server sent invalid JSON: {raw[:80]!r}") from None
        kind = msg.get("type") if isinstance(msg, dict) else None
        if kind == "item":
            return self._accept(parse_event(msg.get("item")), ahead=msg.get("ahead") is True)
        if kind == "subscribed":
            self._answered(msg)
        elif kind == "error":
            self._error(msg)
        return None  # pong, and message types added after this library

    def _accept(self, event: Event, *, ahead: bool = False) -> Event | None:
        # Never twice, never backwards: the guarantee does not rest on the server alone.
        if self._last is not None and stream_key(event.id) <= self._last:
            return None
        if event.id in self._ahead:
            if not ahead:  # its place in the stream: the cursor may pass it now
                self._ahead.discard(event.id)
                self._last, self._last_id = stream_key(event.id), event.id
            return None
        if ahead:
            # A flash sent before earlier items still on their way: show it,
            # but do not move the resume cursor past the items it overtook.
            if len(self._ahead) >= MAX_AHEAD:
                # Each is remembered until its in-order copy comes; a gateway
                # sends that copy within its buffer, so this many means a
                # server that never will.
                raise ProtocolError(
                    f"the server sent more than {MAX_AHEAD:,} items ahead of their turn"
                )
            self._ahead.add(event.id)
        # Items of an unsubscribed tag that were already on the way, and
        # (from a server that does not filter languages) other languages.
        if not matches(self.tags, event.tags):
            return None
        if not language_matches(self._languages, event.language):
            return None
        return event

    def _answered(self, msg: dict[str, Any]) -> None:
        if self._ops:
            self._ops.popleft()
        tags = tuple(str(t) for t in msg.get("tags") or ())
        position = msg.get("position")
        if self._last_id is None and self._origin is None and isinstance(position, str):
            # Nothing yielded yet: should the connection drop before the first
            # item, resume from where the gateway stood when we subscribed.
            self._origin = position
        self._confirmed = frozenset(tags)
        self._notify(Subscribed(tags, self._last_id))

    def _error(self, msg: dict[str, Any]) -> None:
        code, text = str(msg.get("code")), str(msg.get("message"))
        if code == "history_truncated":
            self._notify(HistoryTruncated(text))
            return
        if self._ops:
            self._ops.popleft()  # the change was refused: the tags stay as they were
        field = msg.get("field")
        raise SubscriptionError(code, text, field if isinstance(field, str) else None)

    def _yield(self, event: Event) -> Event:
        if event.id not in self._ahead:
            self._last, self._last_id = stream_key(event.id), event.id
            self._ahead = {a for a in self._ahead if stream_key(a) > self._last}
            self._uncommitted = event.id
        return event

    def _commit(self) -> None:
        """Record the last yielded item as handled: the application asked for more."""
        if self._cursor is not None and self._uncommitted is not None:
            self._cursor.save(self._uncommitted)
        self._uncommitted = None


def _messages(frame: bytes) -> list[bytes]:
    """A frame's messages: its lines, without blank ones (a trailing newline, the
    ndjson habit, is framing and not a message that fails to parse)."""
    return [line for line in frame.split(b"\n") if line.strip()]


def _is_item(raw: bytes) -> bool:
    """Whether a message is an item (left for _receive to judge, bad JSON included)."""
    with contextlib.suppress(orjson.JSONDecodeError):
        msg = orjson.loads(raw)
        return isinstance(msg, dict) and msg.get("type") == "item"
    return False


def _retry_after(err: BaseException) -> float:
    """Seconds a refused handshake's ``Retry-After`` asks for (0 without one, or
    for the HTTP-date form: the backoff decides then)."""
    if not isinstance(err, InvalidStatus):
        return 0.0
    value = err.response.headers.get("Retry-After", "").strip()
    return float(value) if value.isdigit() else 0.0


def _refusal(err: InvalidStatus) -> RefusedError | None:
    """The exception for a refused upgrade, or None when a retry may succeed."""
    status = err.response.status_code
    if status >= 500 or status in (408, 429):
        return None
    code, message = "http_error", err.response.reason_phrase
    with contextlib.suppress(orjson.JSONDecodeError, KeyError, TypeError):
        body = orjson.loads(err.response.body or b"")
        code, message = str(body["error"]["code"]), str(body["error"]["message"])
    if status in (401, 403):
        return AuthError(status, code, message)
    return RefusedError(status, code, message)


def _describe(err: BaseException) -> str:
    return str(err) or type(err).__name__
