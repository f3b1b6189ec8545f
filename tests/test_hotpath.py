"""The performance changes keep the rules: gathering, keep-alive sweeps, event loops.

No timing assertions: the figures are the benchmark's job (``wire bench``,
docs/performance.md); these tests pin down behaviour.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from websockets.asyncio.client import connect

from tests.conftest import Server, ServerFactory
from tests.support import wait_for
from wire.core import frames
from wire.core.closecodes import CloseCode
from wire.core.entry import Entry
from wire.core.ids import ZERO, StreamKey
from wire.gateway import reader as reader_mod
from wire.gateway.hub import WRITE_TURN, Conn, Hub
from wire.gateway.reader import Reader
from wire.runtime import loop
from wire.runtime.settings import Settings


def entry(ms: int) -> Entry:
    return Entry(f"{ms}-0", ("world",), 5, f"g{ms}", b'{"id":"%d-0","title":"t"}' % ms)


class FakeStore:
    """Hands the reader prepared batches, then stops it.

    Each batch comes with how long its read waited (on a fake clock): a quiet
    wire's read waits for its item, a burst's finds items there.
    """

    def __init__(self, batches: list[tuple[float, list[Entry]]]) -> None:
        self.batches = batches
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    async def last_key(self) -> StreamKey:
        return ZERO

    async def read_new(self, after: StreamKey, *, count: int, block_ms: int | None) -> list[Entry]:
        if not self.batches:
            raise asyncio.CancelledError
        waited, batch = self.batches.pop(0)
        self.now += waited
        return batch


QUIET, BUSY = 1.0, 0.0005  # seconds a read waited


def costly_passes(hub: Hub, store: FakeStore, before: Callable[[], object] = lambda: None) -> None:
    """Each pass of ``hub`` costs 10 ms on the store's clock, as with many connections
    (writes are what costs: the reader then lingers in a burst); ``before`` runs first."""
    write_owed = hub.write_owed

    async def slow_write(between: Callable[[], Awaitable[None]] | None = None) -> None:
        before()
        store.now += 0.01
        await write_owed(between)

    hub.write_owed = slow_write  # type: ignore[method-assign]


def reader_on(store: FakeStore, hub: Hub, gather_ms: float) -> Reader:
    reader = Reader(store, hub, Settings(read_gather_ms=gather_ms))  # type: ignore[arg-type]
    reader.clock = store.clock
    return reader


async def test_the_reader_gathers_only_while_a_burst_is_under_way(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sleeps: list[float] = []
    real_sleep = asyncio.sleep
    batches = [
        (QUIET, [entry(1)]),  # a quiet wire: out at once
        (QUIET, [entry(2), entry(3)]),  # several at once: a burst begins, linger
        (0.0, [entry(4)]),  # what the linger found
        (0.0, []),
        (0.0, []),  # two lingers in a row found nothing: dispatch
        (BUSY, [entry(5)]),  # one item, but the read did not wait: still the burst
        (0.0, [entry(6)]),
        (0.0, []),
        (0.0, []),
        (QUIET, [entry(7)]),  # quiet again
    ]
    store = FakeStore(batches)

    async def fake_sleep(delay: float, *args: Any) -> None:
        sleeps.append(delay)
        store.now += delay
        await real_sleep(0)

    monkeypatch.setattr(asyncio, "sleep", fake_sleep)
    hub = Hub()
    costly_passes(hub, store)
    reader = reader_on(store, hub, 2.0)
    with pytest.raises(asyncio.CancelledError):
        await reader.run()
    # Lingering only in the burst; the batches 1 | 2-4 | 5-6 | 7.
    assert sleeps == [0.002] * 6
    assert (reader.batches, reader.entries) == (4, 7)
    assert hub.position == (7, 0)


async def test_with_cheap_dispatches_the_reader_never_lingers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Few connections: nothing to save by coalescing, items go out as read."""
    sleeps: list[float] = []

    async def fake_sleep(delay: float, *args: Any) -> None:
        sleeps.append(delay)

    monkeypatch.setattr(asyncio, "sleep", fake_sleep)
    batches = [(QUIET, [entry(1)]), (BUSY, [entry(2), entry(3)]), (BUSY, [entry(4)])]
    reader = reader_on(FakeStore(batches), Hub(), 2.0)
    with pytest.raises(asyncio.CancelledError):
        await reader.run()
    assert sleeps == []
    assert (reader.batches, reader.entries) == (3, 4)


async def test_gathering_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps: list[float] = []

    async def fake_sleep(delay: float, *args: Any) -> None:
        sleeps.append(delay)

    monkeypatch.setattr(asyncio, "sleep", fake_sleep)
    batches = [(BUSY, [entry(1), entry(2)]), (BUSY, [entry(3), entry(4)])]
    reader = reader_on(FakeStore(batches), Hub(), 0)
    with pytest.raises(asyncio.CancelledError):
        await reader.run()
    assert sleeps == []


class Transport:
    def __init__(self) -> None:
        self.data = bytearray()
        self.closing = False
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.data += data
        self.writes += 1

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True


class TickingStore(FakeStore):
    """A FakeStore whose clock moves on each look: every turn of a pass is a poll's worth."""

    def __init__(self, batches: list[tuple[float, list[Entry]]]) -> None:
        super().__init__(batches)
        self.polls = 0
        #: The count each read asked for.
        self.asked: list[int] = []

    def clock(self) -> float:
        self.now += 2 * reader_mod.POLL_EVERY
        return self.now

    async def read_new(self, after: StreamKey, *, count: int, block_ms: int | None) -> list[Entry]:
        self.polls += block_ms is None
        self.asked.append(count)
        return await super().read_new(after, count=count, block_ms=block_ms)


def fanned_out(hub: Hub, n: int) -> list[Transport]:
    transports = [Transport() for _ in range(n)]
    for t in transports:
        conn = Conn(t)
        hub.attach(conn)
        hub.retag(conn, frozenset({"world"}))
    return transports


async def test_during_a_long_pass_the_reader_takes_what_arrived_into_the_unwritten_shares() -> None:
    """10,000 connections take a pass of some 90 ms: an item published meanwhile goes to
    the connections the pass has not reached in the same write as the pass's own item,
    and to the ones it has in the next pass, which starts at once (nothing to linger for)."""
    hub = Hub()
    transports = fanned_out(hub, 2 * WRITE_TURN)
    one, two = entry(1), entry(2)
    store = TickingStore([(QUIET, [one]), (0.0, [two]), (0.0, [])])
    reader = reader_on(store, hub, 2.0)
    reader.dispatch_seconds = 2 * reader_mod.LONG_PASS  # the last pass was long
    with pytest.raises(asyncio.CancelledError):
        await reader.run()
    assert all(bytes(t.data) == one.ws_frame + two.ws_frame for t in transports)
    assert sorted(t.writes for t in transports) == [1] * WRITE_TURN + [2] * WRITE_TURN
    assert not hub.owed and (reader.entries, store.polls) == (2, 2)


async def test_shares_owed_go_out_when_the_next_read_fails() -> None:
    """An item taken mid-pass is in memory: Redis going away right after the pass
    must not hold it back from the connections the pass had already written."""
    hub = Hub()
    transports = fanned_out(hub, 2 * WRITE_TURN)
    one, two = entry(1), entry(2)

    class Failing(TickingStore):
        async def read_new(
            self, after: StreamKey, *, count: int, block_ms: int | None
        ) -> list[Entry]:
            if not self.batches:
                raise RedisConnectionError("redis went away")  # the read after the pass
            return await super().read_new(after, count=count, block_ms=block_ms)

    store = Failing([(QUIET, [one]), (0.0, [two])])
    reader = reader_on(store, hub, 2.0)
    reader.dispatch_seconds = 2 * reader_mod.LONG_PASS
    task = asyncio.create_task(reader.run())
    await wait_for(lambda: reader.errors > 0, "the read after the pass to fail")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert all(bytes(t.data) == one.ws_frame + two.ws_frame for t in transports)
    assert not hub.owed and not reader.way.busy


async def test_a_pass_takes_in_no_more_than_a_read_batch() -> None:
    """What a pass carries (each connection's share, each write) stays bounded by
    WIRE_READ_BATCH, however many looks a long pass makes."""
    hub = Hub()
    transports = fanned_out(hub, 3 * WRITE_TURN)
    first, more = [entry(1), entry(2)], [entry(3), entry(4), entry(5)]
    # The first read, a look mid-pass, the read after the pass, its two lingers.
    store = TickingStore([(QUIET, first), (0.0, more[:1]), (0.0, more[1:]), (0.0, []), (0.0, [])])
    reader = Reader(store, hub, Settings(read_gather_ms=2.0, read_batch=3))  # type: ignore[arg-type]
    reader.clock = store.clock
    reader.dispatch_seconds = 2 * reader_mod.LONG_PASS
    with pytest.raises(asyncio.CancelledError):
        await reader.run()
    # One look mid-pass, with room for one entry (3 - 2); the rest in the next pass.
    assert store.asked[:2] == [3, 1] and reader.entries == 5
    assert all(bytes(t.data).count(b'"type":"item"') == 5 for t in transports)
    assert max(t.writes for t in transports) <= 3


async def test_after_a_short_pass_the_reader_never_looks_for_more() -> None:
    """1,000 connections take 8-10 ms: looking (a round trip) would only slow them."""
    hub = Hub()
    transports = fanned_out(hub, 2 * WRITE_TURN)
    one = entry(1)
    store = TickingStore([(QUIET, [one])])  # then the next read ends the reader
    reader = reader_on(store, hub, 2.0)
    reader.dispatch_seconds = reader_mod.LONG_PASS / 2
    with pytest.raises(asyncio.CancelledError):
        await reader.run()
    assert store.polls == 0
    assert all(bytes(t.data) == one.ws_frame and t.writes == 1 for t in transports)


async def test_the_reader_holds_the_right_of_way_from_a_read_until_it_waits_again() -> None:
    """Busy while it has entries to write (lingers included), free while it waits."""
    seen: list[tuple[str, bool]] = []
    hub = Hub()
    # A quiet item; then a burst (two at once), and two looks that find nothing.
    store = FakeStore([(QUIET, [entry(1)]), (QUIET, [entry(2), entry(3)]), (0.0, []), (0.0, [])])
    read_new = store.read_new

    async def watched(after: StreamKey, *, count: int, block_ms: int | None) -> list[Entry]:
        seen.append(("wait" if block_ms else "look", reader.way.busy))
        return await read_new(after, count=count, block_ms=block_ms)

    store.read_new = watched  # type: ignore[method-assign]
    costly_passes(hub, store, lambda: seen.append(("write", reader.way.busy)))
    reader = reader_on(store, hub, 2.0)
    with pytest.raises(asyncio.CancelledError):
        await reader.run()
    assert seen == [
        ("wait", False), ("write", True),
        ("wait", False), ("look", True), ("look", True), ("write", True),
        ("wait", False),
    ]  # fmt: skip


async def test_a_keepalive_round_pings_websockets_and_closes_the_silent() -> None:
    hub = Hub()
    answers, silent, sse = Conn(Transport()), Conn(Transport()), Conn(Transport(), sse=True)
    for c in (answers, silent, sse):
        hub.attach(c)
    await hub.keepalive(b"comment", per_step=1)
    assert answers.transport.data == frames.WS_PING  # type: ignore[attr-defined]
    assert sse.transport.data == b"comment"  # type: ignore[attr-defined]
    hub.pong(answers)
    await hub.keepalive(b"comment")
    assert not answers.closed and not sse.closed
    assert silent.closed
    close = frames.ws_close(CloseCode.PROTOCOL_ERROR, "ping timeout")
    assert silent.transport.data == frames.WS_PING + close  # type: ignore[attr-defined]
    assert hub.unanswered == {answers}
    hub.detach(answers)
    assert hub.unanswered == set()


async def test_one_item_goes_out_as_its_cached_frame() -> None:
    hub, t = Hub(), Transport()
    conn = Conn(t)
    hub.attach(conn)
    hub.retag(conn, frozenset({"world"}))
    e = entry(7)
    hub.dispatch([e])
    assert bytes(t.data) == e.ws_frame
    assert conn.out is None and conn.ahead is None


async def test_the_server_answers_a_client_ping_and_keeps_a_ponging_client(
    make_server: ServerFactory,
) -> None:
    server: Server = await make_server(ping_interval=0.1)
    async with connect(server.ws + "?tags=world") as ws:
        await ws.recv()  # subscribed
        pong = await ws.ping(b"are you there")
        await asyncio.wait_for(pong, 5)
        await asyncio.sleep(0.5)  # several keep-alive rounds, each answered by the library
        await ws.send('{"type":"ping"}')
        assert "pong" in str(await asyncio.wait_for(ws.recv(), 5))


async def _which_loop() -> str:
    return type(asyncio.get_running_loop()).__module__.split(".")[0]


def test_the_event_loop_is_chosen_by_setting() -> None:
    pytest.importorskip("uvloop")
    assert loop.run(_which_loop(), "asyncio") == "asyncio"
    assert loop.run(_which_loop(), "uvloop") == "uvloop"
    assert loop.run(_which_loop(), "auto") == "uvloop"
    with pytest.raises(SystemExit, match="WIRE_EVENT_LOOP"):
        loop.run(_which_loop(), "fastest")


def test_the_collector_is_tuned_for_many_long_lived_connections() -> None:
    import gc

    saved = gc.get_threshold()
    try:
        assert loop.run(_which_loop(), "asyncio", gc_threshold=12_345) == "asyncio"
        assert gc.get_threshold()[0] == 12_345
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*saved)
