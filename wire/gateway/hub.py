"""The hot path: route each item to the connections whose tags match.

One :class:`Hub` per gateway process. The reader hands it batches of entries;
for each entry it finds the subscribers through an index from subscription
key to connections (cost proportional to the item's tags and their prefixes,
not to the number of subscribers), collects each connection's share of the
batch, and writes that share with one ``transport.write``.

A language filter splits the index: a connection that wants only ``en`` sits
in the ``world@en`` bucket instead of ``world`` (see
:func:`wire.core.entry.language_keys`), so an item is looked up under its
routes and, only while some connection filters languages, under its routes
with its language. Connections without a filter stay in the plain buckets and
cost nothing more; a filtered one costs nothing for items in other languages. Nothing on this
path awaits a subscriber: a connection whose unsent data passes the cap is
closed with 4008 ``slow consumer`` and resumes with ``since``.

The hub composes small units: each connection's state machine
(:mod:`~wire.gateway.state`, the one table of transitions), the backlog of a
connection that is behind (:mod:`~wire.gateway.backlog`), the window of
recent items (:mod:`~wire.gateway.recent`) and keep-alive rounds
(:mod:`~wire.gateway.keepalive`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from collections.abc import Set as AbstractSet
from itertools import chain

from wire.core import frames
from wire.core.closecodes import CloseCode
from wire.core.entry import LANG_SEP, Entry
from wire.core.ids import ZERO, StreamKey
from wire.core.ledger import SSE, WEBSOCKET, Tally
from wire.core.resume import Window, fresh
from wire.gateway.backlog import Backlog
from wire.gateway.conn import Conn, Transport
from wire.gateway.holding import Holding
from wire.gateway.keepalive import Pings, sweep
from wire.gateway.owed import Owed
from wire.gateway.recent import Recent
from wire.gateway.state import (
    CATCH_UP,
    CLOSE,
    CLOSED,
    FALL_BEHIND,
    GO_LIVE,
    REPLAY,
    step,
)

__all__ = ["Conn", "Hub", "Transport"]

log = logging.getLogger("wire.gateway.hub")

#: Past this much unsent data a connection is behind: the hub queues its items
#: itself (where urgent ones can overtake) instead of handing them to asyncio.
#: At most a quarter of the connection cap, so that a write let through just
#: under the mark (a replay page, a quarter of the cap) and a reply or a
#: keep-alive behind it stay under the cap, however small it is set.
HOLD_AT = 64 * 1024
#: Connections written per turn of a dispatch in turns (see ``Hub.dispatch_in_turns``):
#: at 6-10 µs per loopback write, 2-3 ms between two looks at everything else.
WRITE_TURN = 256
RELEASE_AT = 16 * 1024
FLUSH_EVERY = 0.005
ABORT_AFTER = 5.0  # seconds a closing slow consumer gets to read its close frame


#: The targets of an entry nobody subscribed to (never changed).
_NOBODY: frozenset[Conn] = frozenset()


def _abort_unsent(transport: Transport) -> None:
    """Abort a closing transport that still holds unsent data.

    One whose buffer drained has already closed itself, and asyncio's
    ``abort()`` on such a transport raises inside the event loop.
    """
    if transport.get_write_buffer_size():
        transport.abort()


async def _yield() -> None:
    await asyncio.sleep(0)


def _wake(conn: Conn) -> None:
    waiter, conn.caught_up_waiter = conn.caught_up_waiter, None
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


class Hub:
    """Subscriptions, the recent-items window and fan-out for one process."""

    def __init__(
        self,
        *,
        max_buffer: int = 1 << 20,
        recent: int = 10_000,
        recent_bytes: int = 64 << 20,
        max_catchups: int = 16,
        tally: Tally | None = None,
    ) -> None:
        self.max_buffer = max_buffer
        self.hold_at = min(HOLD_AT, max_buffer // 4)
        self.index: dict[str, set[Conn]] = {}
        #: Per subscription key, the languages of its language-filtered buckets
        #: (``world`` -> {``en``} while ``world@en`` is in the index): empty
        #: while no connection filters languages.
        self.languages: dict[str, set[str]] = {}
        self.conns: set[Conn] = set()
        #: Everything up to here has been dispatched.
        self.position: StreamKey = ZERO
        self.window = Recent(recent, recent_bytes)
        self.deliveries = 0
        #: Connections in a behind state, which the flusher watches drain.
        self.behind: set[Conn] = set()
        self._flusher: asyncio.Task[None] | None = None
        self.slow_closes = 0
        self.pings: Pings[Conn] = Pings()
        #: Turns for catch-ups that read Redis (see :mod:`wire.gateway.replay`):
        #: each holds a page from Redis and a batch in flight, a few MiB.
        self.catchups = asyncio.Semaphore(max(1, max_catchups))
        #: The delivery ledger's unflushed records (see :mod:`wire.core.ledger`).
        self.tally = tally if tally is not None else Tally()
        #: Attached connections with a named token: the ones the ledger names.
        self.named: set[Conn] = set()
        #: Writes of items to connections (``deliveries / writes``: items per write).
        self.writes = 0
        #: Groups of connections owed a share, oldest first (see :mod:`wire.gateway.owed`).
        self.owed: deque[Owed] = deque()

    @property
    def recent(self) -> list[Entry]:
        """The newest dispatched entries; contiguous after :attr:`recent_base`."""
        return self.window.entries

    @property
    def recent_base(self) -> StreamKey | None:
        return self.window.base

    @property
    def recent_bytes(self) -> int:
        return self.window.total

    @property
    def unanswered(self) -> set[Conn]:
        """WebSocket connections pinged in the last keep-alive round and not yet ponged."""
        return self.pings.unanswered

    def start(self, position: StreamKey) -> None:
        """Set where the reader starts; the recent window begins there."""
        self.position = position
        self.window.start(position)

    def attach(self, conn: Conn) -> None:
        self.conns.add(conn)
        if conn.partner is not None:
            self.named.add(conn)

    def detach(self, conn: Conn) -> None:
        """Forget a connection (idempotent)."""
        self.conns.discard(conn)
        self.named.discard(conn)
        conn.out = None  # a share still owed has nowhere to go
        self.pings.answered(conn)
        self._unindex(conn, conn.keys)
        conn.keys = frozenset()

    def retag(self, conn: Conn, keys: frozenset[str]) -> None:
        """Make ``keys`` (language-filtered or not) the connection's subscription."""
        if conn.out is not None:
            self._flush_share(conn)
        self._unindex(conn, conn.keys - keys)
        index = self.index
        for key in keys - conn.keys:
            subs = index.get(key)
            if subs is None:
                subs = index[key] = set()
                if LANG_SEP in key:
                    tag, _, language = key.partition(LANG_SEP)
                    self.languages.setdefault(tag, set()).add(language)
            subs.add(conn)
        conn.keys = keys

    def _unindex(self, conn: Conn, keys: Iterable[str]) -> None:
        for key in keys:
            subs = self.index.get(key)
            if subs is not None:
                subs.discard(conn)
                if not subs:
                    del self.index[key]
                    if LANG_SEP in key:
                        self._drop_language(key)

    def _drop_language(self, key: str) -> None:
        """A language-filtered bucket emptied: forget its language under its tag."""
        tag, _, language = key.partition(LANG_SEP)
        languages = self.languages.get(tag)
        if languages is not None:
            languages.discard(language)
            if not languages:
                del self.languages[tag]

    def _language_buckets(self, entry: Entry, lists: list[set[Conn]]) -> None:
        """Add the language-filtered buckets ``entry`` goes to (only while there are some).

        An entry without a language (a withdrawal) goes to every language's
        bucket of its routes: it reaches whoever could have had a version.
        """
        index = self.index
        if entry.language is not None:
            lists.extend([index[k] for k in entry.lang_routes if k in index])
            return
        languages = self.languages
        for route in entry.routes:
            for language in languages.get(route, ()):
                lists.append(index[f"{route}{LANG_SEP}{language}"])

    def take(self, entries: Sequence[Entry]) -> None:
        """Route ``entries`` into the shares owed; write nothing yet.

        Connections already owed a share take them into it (they are written
        once, later in the pass under way); the others form a new group,
        written after the groups before it (see :mod:`wire.gateway.owed`).
        The window and position include ``entries`` at once, so a
        subscription made before they are written is told a position it will
        not miss.
        """
        touched = self._route(entries)
        self._remember(entries)
        if not entries:
            return
        for group in self.owed:
            group.taken += entries
        if touched:
            self.owed.append(Owed(list(entries), touched))

    def dispatch(self, entries: Sequence[Entry]) -> None:
        """Deliver a batch read from the stream, in order, once per connection, now.

        All in one turn, with any share still owed: what :meth:`dispatch_in_turns`
        (the reader's) does when it touches at most :data:`WRITE_TURN` connections.
        """
        self.take(entries)
        while self.owed:
            group = self.owed.popleft()
            self._write_shares(group.conns, group)

    async def dispatch_in_turns(
        self, entries: Sequence[Entry], between: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        """:meth:`take` ``entries``, then :meth:`write_owed`."""
        self.take(entries)
        await self.write_owed(between)

    async def write_owed(self, between: Callable[[], Awaitable[None]] | None = None) -> None:
        """Write the shares owed, giving the event loop back every :data:`WRITE_TURN` writes.

        At thousands of connections a pass is several milliseconds of socket
        writes (90 ms at 10,000 here), and in ``wire run`` the publisher's
        requests would wait for all of it. Between turns ``between`` runs (the
        reader looks for new entries there and :meth:`take` s them: they join
        the shares not written yet); a group begun meanwhile holds connections
        this pass has written, and waits for the next. Between turns a
        connection whose share is not written yet may be written to or change
        state: every such entry point writes the share first
        (:meth:`_flush_share`), so each connection sees exactly what an
        undivided dispatch would have sent it.
        """
        turn = between if between is not None else _yield
        first = True
        for _ in range(len(self.owed)):
            if not self.owed:
                break  # a dispatch between turns wrote them all
            group = self.owed[0]
            conns = group.conns
            start = 0
            try:
                for start in range(0, len(conns), WRITE_TURN):
                    if not first:
                        await turn()
                    first = False
                    self._write_shares(conns[start : start + WRITE_TURN], group)
            except BaseException:
                self._write_rest(conns[start:])
                raise
            if self.owed and self.owed[0] is group:
                self.owed.popleft()

    def _write_rest(self, conns: list[Conn]) -> None:
        """A pass was cancelled between turns: write every share still owed now.

        The position is past those entries, so the reader will not take them
        again; a share left in ``conn.out`` would take in later entries without
        the connection ever being written.
        """
        groups, self.owed = self.owed, deque()
        for conn in chain(conns, *(group.conns for group in groups)):
            try:
                self._flush_share(conn)
            except Exception:
                self._drop(conn)

    def _route(self, entries: Sequence[Entry]) -> list[Conn]:
        """Each connection's share of ``entries`` into ``conn.out``: the touched connections.

        Consecutive entries that go to the same connections (a burst on one
        tag: the same index set) are routed as one run, a list extended once
        per connection rather than an append per entry per connection.
        Replaying connections hold theirs instead (:mod:`wire.gateway.holding`);
        one past its cap with no overflow left to spend is closed.
        """
        touched: list[Conn] = []
        overflowed: list[Conn] = []
        # Anonymous connections per index set, while some connections are named.
        counted: dict[int, int] = {}
        run: list[Entry] = []
        run_targets: AbstractSet[Conn] = _NOBODY
        for entry in entries:
            targets = self._targets(entry, counted)
            if targets is not run_targets:
                self._route_run(run, run_targets, touched, overflowed)
                run, run_targets = [], targets
            run.append(entry)
        self._route_run(run, run_targets, touched, overflowed)
        for conn in overflowed:
            self.close(conn, CloseCode.SLOW_CONSUMER, "slow consumer")
        return touched

    def _route_run(
        self,
        run: list[Entry],
        targets: AbstractSet[Conn],
        touched: list[Conn],
        overflowed: list[Conn],
    ) -> None:
        """Route ``run``, entries that all go to ``targets``, in order."""
        for conn in targets:
            # Holding is the replaying states' data: not None exactly
            # when ``conn.state.replaying`` (a closed connection keeps its
            # own but has left the index). Tested against None because
            # CPython fuses that test and its jump: this runs per connection.
            holding = conn.holding
            if holding is not None:
                for entry in run:
                    if not holding.add(entry, self.max_buffer):
                        # Closed after the loop: closing removes the connection
                        # from the index set that ``targets`` may be.
                        overflowed.append(conn)
                        break
                continue
            out = conn.out
            if out is None:
                conn.out = run.copy()
                touched.append(conn)
            else:
                out.extend(run)

    def _targets(self, entry: Entry, counted: dict[int, int]) -> AbstractSet[Conn]:
        """The connections ``entry`` goes to; counted in the ledger (anonymous ones)."""
        index = self.index
        lists = [index[k] for k in entry.routes if k in index]
        if self.languages:
            self._language_buckets(entry, lists)
        if not lists:
            return _NOBODY
        targets = lists[0] if len(lists) == 1 else set().union(*lists)
        # The ledger's anonymous count: one addition per entry, not per
        # connection (named connections are recorded by name in write).
        reached = len(targets)
        if self.named:
            reached = self._anonymous(targets, len(lists) == 1, counted)
        if reached:
            self.tally.count(entry.guid, reached)
        return targets

    def _anonymous(self, targets: set[Conn], indexed: bool, counted: dict[int, int]) -> int:
        """How many of ``targets`` are anonymous; an index set's count is kept for
        the batch (its entries mostly share one), a union's is not (its id may be reused)."""
        if not indexed:
            return len(targets) - len(self.named & targets)
        found = counted.get(id(targets))
        if found is None:
            found = counted[id(targets)] = len(targets) - len(self.named & targets)
        return found

    def _write_shares(self, conns: list[Conn], group: Owed) -> None:
        """Write each connection's share (taken from ``conn.out``).

        In a burst most connections' share is everything the group took: its
        bytes are joined once per encoding, not once per connection.
        """
        n = len(group.taken)
        for conn in conns:
            share, conn.out = conn.out, None
            if not share:
                continue  # written out of turn (see _flush_share)
            try:
                # The length test first, here: this runs once per connection.
                data = group.whole_of(conn, share) if len(share) == n > 1 else None
                self._write(conn, share, data)
            except Exception:
                self._drop(conn)

    def _drop(self, conn: Conn) -> None:
        """A write to ``conn`` raised (a bug, here or in the loop): end that connection.

        The batch is not read again (the position is past it), so the share
        would be lost; closed, the client resumes with ``since`` and loses
        nothing, and the other connections of the dispatch are not held up.
        """
        log.exception("writing to a subscriber failed; closing it (it resumes with since)")
        try:
            self.close(conn, CloseCode.INTERNAL_ERROR, "internal error")
        except Exception:
            # Not after a close that worked: aborting a transport that closed
            # itself raises inside the event loop (see _abort_unsent).
            with contextlib.suppress(Exception):
                conn.transport.abort()

    def _flush_share(self, conn: Conn) -> None:
        """Write a share that a dispatch in turns has not reached yet, before anything else."""
        share, conn.out = conn.out, None
        if share:
            self._write(conn, share, None)

    def _remember(self, entries: Sequence[Entry]) -> None:
        if entries:
            self.position = entries[-1].key
            self.window.add(entries)

    def write(self, conn: Conn, entries: Sequence[Entry]) -> None:
        """Write entries newer than the connection's last one; enforce the cap.

        A connection whose socket is behind gets its entries queued instead
        (see :meth:`_hold`), so that urgent ones can still go ahead.
        """
        if conn.out is not None:
            self._flush_share(conn)
        self._write(conn, entries, None)

    def _write(self, conn: Conn, entries: Sequence[Entry], data: bytes | None) -> None:
        """:meth:`write`, with ``entries`` already encoded for ``conn`` if ``data``."""
        state = conn.state
        if state is CLOSED or not entries:
            return
        if state.behind:
            self._hold(conn, entries)
            return
        if entries[0].key <= conn.last_key:
            entries, data = fresh(entries, conn.last_key), None
            if not entries:
                return
        # _write_items inlined: this runs once per connection per batch.
        conn.last_key = entries[-1].key
        self.deliveries += len(entries)
        self.writes += 1
        self._send(conn, conn.encode(entries) if data is None else data)
        if conn.partner is not None:
            self._record(conn, entries)
        if conn.state is not CLOSED and conn.transport.get_write_buffer_size() > self.hold_at:
            self._fall_behind(conn)

    def _record(self, conn: Conn, entries: Sequence[Entry]) -> None:
        """The ledger: a named connection was handed ``entries`` (one tuple per write)."""
        if conn.partner is not None and conn.state is not CLOSED:
            self.tally.add(conn.partner, SSE if conn.sse else WEBSOCKET, entries)

    def _write_items(self, conn: Conn, entries: Sequence[Entry], last: StreamKey) -> None:
        """Write ``entries``, after which the connection has had everything up to ``last``."""
        conn.last_key = last
        if not entries:
            return
        self.deliveries += len(entries)
        self.writes += 1
        self._send(conn, conn.encode(entries))
        if conn.partner is not None:
            self._record(conn, entries)
        if conn.state is not CLOSED and conn.transport.get_write_buffer_size() > self.hold_at:
            self._fall_behind(conn)

    def _fall_behind(self, conn: Conn) -> None:
        conn.state = step(conn.state, FALL_BEHIND)
        conn.backlog = Backlog()
        self.behind.add(conn)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_behind())

    def _hold(self, conn: Conn, entries: Sequence[Entry]) -> None:
        """Queue entries for a connection that is behind; urgent ones go ahead now."""
        backlog = conn.backlog
        assert backlog is not None
        urgent = backlog.add(entries, conn.last_key, overtake=not conn.sse)
        if urgent:
            self.deliveries += len(urgent)
            self.writes += 1
            self._send(conn, b"".join([e.ahead_frame for e in conn.visible(urgent)]))
            if conn.partner is not None:
                self._record(conn, urgent)
        if backlog.size + conn.transport.get_write_buffer_size() > self.max_buffer:
            self.close(conn, CloseCode.SLOW_CONSUMER, "slow consumer")

    async def _flush_behind(self) -> None:
        """Write queued entries as each lagging socket drains (runs only while needed)."""
        while self.behind:
            await asyncio.sleep(FLUSH_EVERY)
            for conn in list(self.behind):
                if conn.state is CLOSED:
                    self.behind.discard(conn)
                    conn.backlog = None
                    _wake(conn)
                elif conn.transport.get_write_buffer_size() <= RELEASE_AT:
                    self.behind.discard(conn)
                    self._catch_up(conn)
                    _wake(conn)

    def _catch_up(self, conn: Conn) -> None:
        """The socket drained: leave the behind state and write the backlog."""
        backlog, conn.backlog = conn.backlog, None
        conn.state = step(conn.state, CATCH_UP)
        assert backlog is not None
        entries, last = backlog.release()
        if last is not None:
            self._write_items(conn, entries, last)

    async def caught_up(self, conn: Conn) -> None:
        """Wait until the hub holds nothing for ``conn`` (at once when it is not behind).

        A replay writes a page, then waits here: the next page goes out only
        once the socket has taken the last, so a client that reads is never
        mistaken for a slow one, and the hub's queue (where urgent items can
        overtake) never fills with history.
        """
        while conn.state.behind:
            # A waiter left done by a waiter that timed out is replaced.
            if conn.caught_up_waiter is None or conn.caught_up_waiter.done():
                conn.caught_up_waiter = asyncio.get_running_loop().create_future()
            await conn.caught_up_waiter

    def send(self, conn: Conn, data: bytes) -> None:
        """Write raw bytes (a control message) after any share still owed; close over the cap."""
        if conn.out is not None:
            self._flush_share(conn)
        self._send(conn, data)

    def _send(self, conn: Conn, data: bytes) -> None:
        """:meth:`send` without the owed share: the hub's own writes, which keep the order."""
        if conn.state is CLOSED:
            return
        transport = conn.transport
        if transport.is_closing():
            self.detach(conn)
            conn.state = step(conn.state, CLOSE)
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
        """One keep-alive round for every connection (see :mod:`wire.gateway.keepalive`)."""
        for conn in self.pings.overdue():
            self.close(conn, CloseCode.PROTOCOL_ERROR, "ping timeout")
        await sweep(list(self.conns), lambda c: self._keep(c, sse_comment), per_step, spread)

    def _keep(self, conn: Conn, sse_comment: bytes) -> None:
        if conn.state is CLOSED:
            return
        if conn.sse:
            self.send(conn, sse_comment)
        else:
            self.pings.pinged(conn)
            self.send(conn, frames.WS_PING)

    def pong(self, conn: Conn) -> None:
        """The connection answered its ping."""
        self.pings.answered(conn)

    def close(self, conn: Conn, code: int, reason: str) -> None:
        """Close a connection from the server side, without awaiting it.

        A share still owed goes first (writing it may close the connection itself).
        """
        if conn.out is not None:
            self._flush_share(conn)
        if conn.state is CLOSED:
            return
        conn.state = step(conn.state, CLOSE)
        self.detach(conn)
        if code == CloseCode.SLOW_CONSUMER:
            self.slow_closes += 1
        transport = conn.transport
        if not transport.is_closing():
            end = frames.sse_end if conn.sse else frames.ws_close
            transport.write(end(code, reason))
        transport.close()
        # close() waits for the buffer to drain; a client that never reads would
        # hold it forever, so it gets a few seconds to read its close frame.
        asyncio.get_running_loop().call_later(ABORT_AFTER, _abort_unsent, transport)
        _wake(conn)
        if conn.on_close is not None:
            conn.on_close(code, reason)

    def begin_replay(self, conn: Conn) -> None:
        """Hold live entries for a connection while it replays history."""
        if conn.out is not None:
            self._flush_share(conn)
        was, conn.state = conn.state, step(conn.state, REPLAY)
        if not was.replaying:
            conn.holding = Holding(self.position)

    def hand_over_held(self, conn: Conn) -> Window | None:
        """The window of the stream that what was held (or dropped) so far for a
        replaying connection fell in, None when nothing was; holding goes on
        (see :meth:`Holding.hand_over <wire.gateway.holding.Holding.hand_over>`)."""
        assert conn.holding is not None
        return conn.holding.hand_over(self.position)

    def end_replay(self, conn: Conn) -> Window | None:
        """Send what was held during the replay and go live.

        Unless an overflow dropped held entries: then the connection keeps
        holding and the window they were in is returned, for the caller to
        replay before it ends the replay again.
        """
        assert conn.holding is not None
        held, owed = conn.holding.take(self.position)
        if owed is not None:
            return owed
        conn.state = step(conn.state, GO_LIVE)
        conn.holding = None
        # Held for the tags at the time; an unsubscribe during the replay
        # removed some, whose items must not follow the ``subscribed`` saying so.
        held = [e for e in held if e.matches(conn.keys)]
        if held:
            self.write(conn, held)
        return None

    def recent_window(self, window: Window) -> list[Entry] | None:
        """Entries in ``window`` from memory, or None when memory does not cover it."""
        return self.window.window(window)

    def recent_latest(
        self, keys: frozenset[str], limit: int, upto: StreamKey
    ) -> list[Entry] | None:
        """The newest ``limit`` matching entries up to ``upto`` from memory, oldest first.

        None when memory runs out before ``limit`` matches are found.
        """
        return self.window.latest(keys, limit, upto)
