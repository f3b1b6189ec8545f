"""The hot path: route each item to the connections whose tags match.

One :class:`Hub` per gateway process. The reader hands it batches of entries;
for each entry it finds the subscribers through an index from subscription
key to connections (cost proportional to the item's tags and their prefixes,
not to the number of subscribers), collects each connection's share of the
batch, and writes that share with one ``transport.write``. Nothing on this
path awaits a subscriber: a connection whose unsent data passes the cap is
closed with 4008 ``slow consumer`` and resumes with ``since``.
"""

from __future__ import annotations

import asyncio
import bisect
import operator
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from wire.core import frames
from wire.core.closecodes import CloseCode
from wire.core.entitlements import Grant
from wire.core.entry import Entry
from wire.core.ids import ZERO, StreamKey
from wire.core.resume import Window, fresh

#: Past this much unsent data a connection is behind: the hub queues its items
#: itself (where urgent ones can overtake) instead of handing them to asyncio.
HOLD_AT = 64 * 1024
RELEASE_AT = 16 * 1024
FLUSH_EVERY = 0.005
_key = operator.attrgetter("key")
ABORT_AFTER = 5.0  # seconds a closing slow consumer gets to read its close frame


def _abort_unsent(transport: Transport) -> None:
    """Abort a closing transport that still holds unsent data.

    One whose buffer drained has already closed itself, and asyncio's
    ``abort()`` on such a transport raises inside the event loop.
    """
    if transport.get_write_buffer_size():
        transport.abort()


def _wake(conn: Conn) -> None:
    waiter, conn.caught_up_waiter = conn.caught_up_waiter, None
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


class Transport(Protocol):
    """The part of an asyncio transport the hub uses."""

    def write(self, data: bytes) -> None: ...
    def get_write_buffer_size(self) -> int: ...
    def is_closing(self) -> bool: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...


class Conn:
    """A subscribed connection as the hub sees it."""

    __slots__ = (
        "ahead",
        "buffer",
        "buffered_bytes",
        "caught_up_waiter",
        "closed",
        "grant",
        "held",
        "held_bytes",
        "keys",
        "last_key",
        "on_close",
        "out",
        "sse",
        "transport",
    )

    def __init__(
        self, transport: Transport, *, sse: bool = False, grant: Grant | None = None
    ) -> None:
        self.transport = transport
        self.sse = sse
        #: A limited grant (partner token), else None: see :meth:`visible`.
        self.grant = grant if grant is not None and grant.limited else None
        self.keys: frozenset[str] = frozenset()
        #: The key of the last item written: nothing at or before it is sent again.
        self.last_key: StreamKey = ZERO
        #: Live entries held while the connection replays history, else None.
        self.buffer: list[Entry] | None = None
        self.buffered_bytes = 0
        #: This connection's share of the batch being dispatched (None between batches).
        self.out: list[Entry] | None = None
        #: Entries queued by the hub while the socket is behind, else None.
        self.held: list[Entry] | None = None
        self.held_bytes = 0
        #: Resolved when the hub stops holding entries for this connection.
        self.caught_up_waiter: asyncio.Future[None] | None = None
        #: Urgent entries already sent ahead of ``held`` (skipped when it is written);
        #: None when there are none (an empty set costs 216 bytes per connection).
        self.ahead: set[StreamKey] | None = None
        self.closed = False
        self.on_close: Callable[[int, str], None] | None = None

    def visible(self, entries: Sequence[Entry]) -> Sequence[Entry]:
        """``entries`` as this connection may see them.

        Routing already keeps items outside a grant away; what is left is a
        withdrawal's tags (those of every version), narrowed to the grant with
        frames built once per grant. Unlimited connections pay nothing.
        """
        grant = self.grant
        if grant is None or not any(e.withdrawal for e in entries):
            return entries
        return grant.visible(entries)

    def encode(self, entries: Sequence[Entry]) -> bytes:
        """The bytes of ``entries`` in this connection's encoding."""
        if self.grant is not None:
            entries = self.visible(entries)
        if len(entries) == 1:  # a quiet wire: one item, its cached bytes as they are
            return entries[0].sse_chunk if self.sse else entries[0].ws_frame
        if self.sse:
            return b"".join([e.sse_chunk for e in entries])
        return b"".join([e.ws_frame for e in entries])


class Hub:
    """Subscriptions, the recent-items window and fan-out for one process."""

    def __init__(
        self, *, max_buffer: int = 1 << 20, recent: int = 10_000, recent_bytes: int = 64 << 20
    ) -> None:
        self.max_buffer = max_buffer
        self.index: dict[str, set[Conn]] = {}
        self.conns: set[Conn] = set()
        #: Everything up to here has been dispatched.
        self.position: StreamKey = ZERO
        #: The newest dispatched entries; contiguous after ``recent_base``.
        self.recent: list[Entry] = []
        self.recent_base: StreamKey | None = None
        self.recent_size = recent
        #: The window's cap in bytes of item JSON, and what it holds now.
        self.recent_max_bytes = recent_bytes
        self.recent_bytes = 0
        self.deliveries = 0
        self.behind: set[Conn] = set()
        self._flusher: asyncio.Task[None] | None = None
        self.slow_closes = 0
        #: WebSocket connections pinged in the last keep-alive round and not yet ponged.
        self.unanswered: set[Conn] = set()

    def start(self, position: StreamKey) -> None:
        """Set where the reader starts; the recent window begins there."""
        self.position = position
        self.recent_base = position
        self.recent.clear()
        self.recent_bytes = 0

    def attach(self, conn: Conn) -> None:
        self.conns.add(conn)

    def detach(self, conn: Conn) -> None:
        """Forget a connection (idempotent)."""
        self.conns.discard(conn)
        self.unanswered.discard(conn)
        self._unindex(conn, conn.keys)
        conn.keys = frozenset()

    def retag(self, conn: Conn, keys: frozenset[str]) -> None:
        """Make ``keys`` the connection's subscription."""
        self._unindex(conn, conn.keys - keys)
        for key in keys - conn.keys:
            self.index.setdefault(key, set()).add(conn)
        conn.keys = keys

    def _unindex(self, conn: Conn, keys: Iterable[str]) -> None:
        for key in keys:
            subs = self.index.get(key)
            if subs is not None:
                subs.discard(conn)
                if not subs:
                    del self.index[key]

    def dispatch(self, entries: Sequence[Entry]) -> None:
        """Deliver a batch read from the stream, in order, once per connection."""
        index = self.index
        touched: list[Conn] = []
        overflowed: list[Conn] = []
        for entry in entries:
            lists = [index[k] for k in entry.routes if k in index]
            if not lists:
                continue
            targets = lists[0] if len(lists) == 1 else set().union(*lists)
            for conn in targets:
                if conn.buffer is not None:
                    conn.buffer.append(entry)
                    conn.buffered_bytes += len(entry.json)
                    if conn.buffered_bytes > self.max_buffer:
                        # Closed after the loop: closing removes the connection
                        # from the index set that ``targets`` may be.
                        overflowed.append(conn)
                    continue
                out = conn.out
                if out is None:
                    conn.out = [entry]
                    touched.append(conn)
                else:
                    out.append(entry)
        for conn in overflowed:
            self.close(conn, CloseCode.SLOW_CONSUMER, "slow consumer")
        for conn in touched:
            share, conn.out = conn.out, None
            if share:
                self.write(conn, share)
        self._remember(entries)

    def write(self, conn: Conn, entries: Sequence[Entry]) -> None:
        """Write entries newer than the connection's last one; enforce the cap.

        A connection whose socket is behind gets its entries queued instead
        (see :meth:`_hold`), so that urgent ones can still go ahead.
        """
        if conn.closed or not entries:
            return
        if conn.held is not None:
            self._hold(conn, entries)
            return
        if entries[0].key <= conn.last_key:
            entries = fresh(entries, conn.last_key)
            if not entries:
                return
        last = entries[-1].key
        ahead = conn.ahead
        if ahead:
            entries = [e for e in entries if e.key not in ahead]
            conn.ahead = {k for k in ahead if k > last} or None
        conn.last_key = last
        if not entries:
            return
        self.deliveries += len(entries)
        self.send(conn, conn.encode(entries))
        if not conn.closed and conn.transport.get_write_buffer_size() > HOLD_AT:
            self._fall_behind(conn)

    def _fall_behind(self, conn: Conn) -> None:
        conn.held, conn.held_bytes = [], 0
        self.behind.add(conn)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_behind())

    def _hold(self, conn: Conn, entries: Sequence[Entry]) -> None:
        """Queue entries for a connection that is behind; urgent ones go ahead now.

        An urgent item (urgency 1-2) is written at once, marked ``ahead``, when
        lower-urgency items are already queued; its place in the queue is kept
        so the connection's order and resume cursor stay those of the stream.
        """
        held = conn.held
        assert held is not None
        # Only what comes after everything queued or sent: a replay page that
        # overlaps the queue must not put an item in it (or send it ahead) twice.
        tail = held[-1].key if held else conn.last_key
        if entries[0].key <= tail:
            entries = fresh(entries, tail)
            if not entries:
                return
        if held and not conn.sse:
            urgent = [e for e in entries if e.urgency <= 2 and e.key > conn.last_key]
            if urgent:
                conn.ahead = (conn.ahead or set()) | {e.key for e in urgent}
                self.deliveries += len(urgent)
                self.send(conn, b"".join([e.ahead_frame for e in conn.visible(urgent)]))
        held.extend(entries)
        conn.held_bytes += sum(len(e.json) for e in entries)
        if conn.held_bytes + conn.transport.get_write_buffer_size() > self.max_buffer:
            self.close(conn, CloseCode.SLOW_CONSUMER, "slow consumer")

    async def _flush_behind(self) -> None:
        """Write queued entries as each lagging socket drains (runs only while needed)."""
        while self.behind:
            await asyncio.sleep(FLUSH_EVERY)
            for conn in list(self.behind):
                if conn.closed or conn.transport.get_write_buffer_size() <= RELEASE_AT:
                    self.behind.discard(conn)
                    held, conn.held = conn.held or [], None
                    self.write(conn, held)
                    _wake(conn)

    async def caught_up(self, conn: Conn) -> None:
        """Wait until the hub holds nothing for ``conn`` (at once when it is not behind).

        A replay writes a page, then waits here: the next page goes out only
        once the socket has taken the last, so a client that reads is never
        mistaken for a slow one, and the hub's queue (where urgent items can
        overtake) never fills with history.
        """
        while conn.held is not None and not conn.closed:
            if conn.caught_up_waiter is None:
                conn.caught_up_waiter = asyncio.get_running_loop().create_future()
            await conn.caught_up_waiter

    def send(self, conn: Conn, data: bytes) -> None:
        """Write raw bytes (a control message or items); close if over the cap."""
        if conn.closed:
            return
        transport = conn.transport
        if transport.is_closing():
            self.detach(conn)
            conn.closed = True
            return
        # The cap applies to what earlier writes left unread: a client that
        # reads keeps up even when one write (a burst, a replay page) is
        # larger than the cap, since the kernel takes it as the client reads.
        # Unsent data thus stays under the cap plus one write.
        if transport.get_write_buffer_size() > self.max_buffer:
            self.close(conn, CloseCode.SLOW_CONSUMER, "slow consumer")
            return
        transport.write(data)

    async def keepalive(self, sse_comment: bytes, per_step: int = 500, spread: float = 0) -> None:
        """One keep-alive round for every connection, from one task.

        WebSocket connections get a ping, and one that has not answered the
        previous round's ping is closed: its peer is gone or frozen. SSE
        connections get a comment. (aiohttp's own heartbeat costs a timer and
        callbacks per connection, about 600 bytes each.) The round goes
        ``per_step`` connections at a time, spread over ``spread`` seconds, so
        live items never wait behind thousands of pings.
        """
        for conn in list(self.unanswered):
            self.close(conn, CloseCode.PROTOCOL_ERROR, "ping timeout")
        conns = list(self.conns)
        pause = spread * per_step / len(conns) if conns else 0
        for start in range(0, len(conns), per_step):
            if start:
                await asyncio.sleep(pause)
            for conn in conns[start : start + per_step]:
                if conn.closed:
                    continue
                if conn.sse:
                    self.send(conn, sse_comment)
                else:
                    self.unanswered.add(conn)
                    self.send(conn, frames.WS_PING)

    def pong(self, conn: Conn) -> None:
        """The connection answered its ping."""
        self.unanswered.discard(conn)

    def close(self, conn: Conn, code: int, reason: str) -> None:
        """Close a connection from the server side, without awaiting it."""
        if conn.closed:
            return
        conn.closed = True
        self.detach(conn)
        if code == CloseCode.SLOW_CONSUMER:
            self.slow_closes += 1
        transport = conn.transport
        if not conn.sse and not transport.is_closing():
            transport.write(frames.ws_close(code, reason))
        transport.close()
        # close() waits for the buffer to drain; a client that never reads would
        # hold it forever, so it gets a few seconds to read its close frame.
        asyncio.get_running_loop().call_later(ABORT_AFTER, _abort_unsent, transport)
        _wake(conn)
        if conn.on_close is not None:
            conn.on_close(code, reason)

    def begin_replay(self, conn: Conn) -> None:
        """Hold live entries for a connection while it replays history."""
        if conn.buffer is None:
            conn.buffer = []
            conn.buffered_bytes = 0

    def take_replay_buffer(self, conn: Conn) -> list[Entry]:
        """What was held so far for a replaying connection; holding goes on.

        The bytes taken still count against the cap until :meth:`end_replay`:
        the caller holds them until its replay sends them.
        """
        held, conn.buffer = conn.buffer or [], []
        return held

    def end_replay(self, conn: Conn) -> None:
        """Send what was held during the replay and go live."""
        held, conn.buffer = conn.buffer or [], None
        conn.buffered_bytes = 0
        # Held for the tags at the time; an unsubscribe during the replay
        # removed some, whose items must not follow the ``subscribed`` saying so.
        held = [e for e in held if e.matches(conn.keys)]
        if held:
            self.write(conn, held)

    def _remember(self, entries: Sequence[Entry]) -> None:
        if not entries:
            return
        self.position = entries[-1].key
        self.recent.extend(entries)
        self.recent_bytes += sum([len(e.json) for e in entries])
        killed = {e.guid for e in entries if e.withdrawal}
        if killed:
            # History never again shows a withdrawn story's versions; the
            # withdrawal itself stays so resuming clients learn of it.
            self.recent = [e for e in self.recent if e.withdrawal or e.guid not in killed]
            self.recent_bytes = sum([len(e.json) for e in self.recent])
        if len(self.recent) > 2 * self.recent_size or self.recent_bytes > self.recent_max_bytes:
            self._evict()

    def _evict(self) -> None:
        """Drop the oldest entries: down to ``recent_size`` and to 3/4 of the byte cap.

        Cutting the list's head moves the rest, so it is done once per many
        batches (past twice the count, or the byte cap), not on every one.
        Replays of a range the window no longer covers read Redis.
        """
        recent = self.recent
        cut = max(0, len(recent) - self.recent_size)
        size = self.recent_bytes - sum([len(e.json) for e in recent[:cut]])
        target = self.recent_max_bytes * 3 // 4
        while cut < len(recent) and size > target:
            size -= len(recent[cut].json)
            cut += 1
        if cut:
            self.recent_base = recent[cut - 1].key
            del recent[:cut]
        self.recent_bytes = size

    def recent_window(self, window: Window) -> list[Entry] | None:
        """Entries in ``window`` from memory, or None when memory does not cover it."""
        if self.recent_base is None or window.after < self.recent_base:
            return None
        lo = bisect.bisect_right(self.recent, window.after, key=_key)
        hi = bisect.bisect_right(self.recent, window.upto, key=_key)
        return self.recent[lo:hi]

    def recent_latest(
        self, keys: frozenset[str], limit: int, upto: StreamKey
    ) -> list[Entry] | None:
        """The newest ``limit`` matching entries up to ``upto`` from memory, oldest first.

        None when memory runs out before ``limit`` matches are found and older
        entries may exist in the stream.
        """
        found: list[Entry] = []
        for entry in reversed(self.recent):
            if entry.key > upto or not entry.matches(keys):
                continue
            found.append(entry)
            if len(found) == limit:
                return found[::-1]
        if self.recent_base == ZERO:
            return found[::-1]
        return None
