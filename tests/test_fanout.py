"""The Hub: routing by tag, once per connection, in order, with a cap on slow readers.

The Hub talks to asyncio transports (``write``, ``get_write_buffer_size``,
``is_closing``, ``close``, ``abort``), so these tests give it an in-memory
transport whose "client" reads only when the test says so. That makes a slow
consumer exact: unread bytes stay in the transport's buffer, just as they do
in a real asyncio transport whose peer stopped reading. The real-socket
versions of these rules are in test_gateway.py.
"""

from __future__ import annotations

import asyncio
import random
import re
import struct

import orjson
import pytest

from tests.support import parse_frames
from wire.core import frames
from wire.core.closecodes import CloseCode
from wire.core.entry import Entry
from wire.core.ids import ZERO, StreamKey
from wire.core.resume import Window
from wire.gateway import hub as fanout
from wire.gateway.holding import MAX_SPILLS
from wire.gateway.hub import Conn, Hub


class FakeTransport:
    """An asyncio-transport stand-in whose peer reads only on request."""

    def __init__(self) -> None:
        self.unread = bytearray()
        self.writes = 0
        self.closing = False
        self.aborted = False
        self.aborted_event = asyncio.Event()

    def write(self, data: bytes) -> None:
        assert not self.aborted, "write after abort"
        if not self.closing:
            self.unread += data
            self.writes += 1

    def get_write_buffer_size(self) -> int:
        return len(self.unread)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = self.aborted = True
        self.aborted_event.set()

    def read(self) -> list[tuple[int, bytes]]:
        """The peer reads everything sent so far: (opcode, payload) per frame."""
        data, self.unread = bytes(self.unread), bytearray()
        return parse_frames(data)


def item_ids(frames: list[tuple[int, bytes]]) -> list[str]:
    ids = []
    for opcode, payload in frames:
        if opcode == 1:
            msg = orjson.loads(payload)
            assert msg["type"] == "item"
            ids.append(msg["item"]["id"])
    return ids


def close_of(frames: list[tuple[int, bytes]]) -> tuple[int, str] | None:
    for opcode, payload in frames:
        if opcode == 8:
            return struct.unpack("!H", payload[:2])[0], payload[2:].decode()
    return None


_seq = 0


def entry(*tags: str, size: int = 0, ms: int | None = None, urgency: int = 5) -> Entry:
    """A new entry, later than every earlier one."""
    global _seq
    _seq += 1
    eid = f"{ms if ms is not None else 1_000 + _seq}-{_seq}"
    body = {"guid": f"g{_seq}", "title": eid, "tags": list(tags), "body": "x" * size}
    stored = orjson.dumps(body)
    return Entry(eid, tags, urgency, f"g{_seq}", b'{"id":"' + eid.encode() + b'",' + stored[1:])


def conn_for(hub: Hub, *keys: str, sse: bool = False) -> tuple[Conn, FakeTransport]:
    transport = FakeTransport()
    conn = Conn(transport, sse=sse)
    hub.attach(conn)
    hub.retag(conn, frozenset(keys))
    return conn, transport


# --- the index --------------------------------------------------------------


def test_retag_moves_the_connection_between_keys() -> None:
    hub = Hub()
    conn, _ = conn_for(hub, "world", "sport")
    assert hub.index == {"world": {conn}, "sport": {conn}}
    hub.retag(conn, frozenset({"sport", "business"}))
    assert hub.index == {"sport": {conn}, "business": {conn}}
    assert conn.keys == {"sport", "business"}


def test_detach_leaves_no_empty_index_entries() -> None:
    hub = Hub()
    a, _ = conn_for(hub, "world", "*")
    b, _ = conn_for(hub, "world")
    hub.detach(a)
    assert hub.index == {"world": {b}}
    assert a not in hub.conns
    hub.detach(a)  # idempotent
    hub.detach(b)
    assert hub.index == {}
    assert hub.conns == set()


def test_unsubscribed_connection_gets_nothing() -> None:
    hub = Hub()
    conn, t = conn_for(hub, "world")
    hub.retag(conn, frozenset())
    hub.dispatch([entry("world")])
    assert t.read() == []


# --- routing ------------------------------------------------------------------


def test_exact_tag_match() -> None:
    hub = Hub()
    _, world = conn_for(hub, "world")
    _, sport = conn_for(hub, "sport")
    e1, e2 = entry("world"), entry("sport")
    hub.dispatch([e1, e2])
    assert item_ids(world.read()) == [e1.id]
    assert item_ids(sport.read()) == [e2.id]


def test_hierarchy_matches_descendants_only() -> None:
    hub = Hub()
    _, world = conn_for(hub, "world")
    _, europe = conn_for(hub, "world/europe")
    _, worl = conn_for(hub, "worl")  # a string prefix is not an ancestor
    _, france = conn_for(hub, "world/europe/france")
    es = [entry("world/europe/france"), entry("world/asia"), entry("world"), entry("worldwide")]
    hub.dispatch(es)
    assert item_ids(world.read()) == [es[0].id, es[1].id, es[2].id]
    assert item_ids(europe.read()) == [es[0].id]
    assert item_ids(france.read()) == [es[0].id]
    assert item_ids(worl.read()) == []


def test_wildcard_gets_everything() -> None:
    hub = Hub()
    _, t = conn_for(hub, "*")
    es = [entry("world"), entry("sport/football"), entry("a", "b")]
    hub.dispatch(es)
    assert item_ids(t.read()) == [e.id for e in es]


def test_once_per_connection_when_several_keys_match() -> None:
    hub = Hub()
    _, t = conn_for(hub, "*", "world", "world/europe", "world/europe/france", "sport")
    e = entry("world/europe/france", "world/asia", "sport")
    hub.dispatch([e])
    assert item_ids(t.read()) == [e.id]


def test_each_connection_gets_its_share_in_order_with_one_write() -> None:
    hub = Hub()
    _, world = conn_for(hub, "world")
    _, both = conn_for(hub, "world", "sport")
    es = [entry("world"), entry("sport"), entry("world/asia"), entry("sport"), entry("world")]
    hub.dispatch(es)
    assert item_ids(world.read()) == [es[0].id, es[2].id, es[4].id]
    assert item_ids(both.read()) == [e.id for e in es]
    assert world.writes == 1 and both.writes == 1
    assert hub.deliveries == 8


def test_runs_of_entries_for_the_same_connections_keep_each_connections_order() -> None:
    """The hub routes consecutive entries bound for the same index set as one run
    (issue 15); runs of different sets interleaved, an entry on two tags (a union
    of sets, a run of its own) and a replaying connection each keep stream order."""
    hub = Hub()
    _, world = conn_for(hub, "world")
    _, sport = conn_for(hub, "sport")
    _, both = conn_for(hub, "world", "sport")
    held, held_t = conn_for(hub, "world")
    hub.begin_replay(held)
    tags = ["world", "world", "world/asia", "sport", "sport", "world", "world sport", "sport"]
    es = [entry(*t.split()) for t in tags]
    hub.dispatch(es)
    on_world = [e.id for e in es if "world" in e.tags[0] or "world" in e.tags]
    on_sport = [e.id for e in es if "sport" in e.tags]
    assert item_ids(world.read()) == on_world
    assert item_ids(sport.read()) == on_sport
    assert item_ids(both.read()) == [e.id for e in es]
    assert world.writes == sport.writes == both.writes == 1
    assert held_t.read() == []  # held while replaying, then sent in order
    hub.end_replay(held)
    assert item_ids(held_t.read()) == on_world


def test_order_across_batches() -> None:
    hub = Hub()
    _, t = conn_for(hub, "*")
    sent = []
    for _ in range(20):
        batch = [entry("x") for _ in range(5)]
        sent += [e.id for e in batch]
        hub.dispatch(batch)
    assert item_ids(t.read()) == sent
    assert hub.position == parse(sent[-1])


def test_item_frame_is_shared_not_rebuilt() -> None:
    hub = Hub()
    _, a = conn_for(hub, "world")
    _, b = conn_for(hub, "*")
    e = entry("world")
    hub.dispatch([e])
    assert e.ws_frame is e.ws_frame  # built once, cached on the entry
    assert a.read() == b.read() == parse_frames(e.ws_frame)


def test_sse_connection_gets_sse_chunks() -> None:
    hub = Hub()
    _, t = conn_for(hub, "world", sse=True)
    e = entry("world")
    hub.dispatch([e])
    chunk = bytes(t.unread)
    assert chunk == e.sse_chunk
    assert f"id: {e.id}\nevent: item\ndata: ".encode() in chunk


def test_nothing_at_or_before_last_key_is_written_again() -> None:
    hub = Hub()
    conn, t = conn_for(hub, "*")
    es = [entry("x") for _ in range(4)]
    hub.write(conn, es[:3])
    hub.write(conn, es[1:])  # overlaps: only the 4th is new
    hub.write(conn, es[:2])  # entirely old
    assert item_ids(t.read()) == [e.id for e in es]
    assert conn.last_key == es[-1].key


# --- slow consumers --------------------------------------------------------------


async def test_slow_consumer_closed_past_the_cap_others_unaffected() -> None:
    hub = Hub(max_buffer=10_000)
    slow, st = conn_for(hub, "world")
    fast, ft = conn_for(hub, "world")
    closes: list[tuple[int, str]] = []
    slow.on_close = lambda code, reason: closes.append((code, reason))
    sent: list[str] = []
    for _ in range(30):
        e = entry("world", size=1_000)
        sent.append(e.id)
        hub.dispatch([e])
        assert item_ids(ft.read()) == [e.id]  # the fast peer reads as it goes
    frames = st.read()
    assert close_of(frames) == (CloseCode.SLOW_CONSUMER, "slow consumer")
    assert closes == [(CloseCode.SLOW_CONSUMER, "slow consumer")]
    got = item_ids(frames)
    assert got == sent[: len(got)]  # a prefix: the client resumes after its last id
    assert st.closing and slow.closed
    assert slow not in hub.conns and slow not in hub.index.get("world", set())
    assert fast in hub.index["world"] and not fast.closed
    assert hub.slow_closes == 1
    # unread data stayed bounded: the cap plus at most one write
    assert sum(len(p) for _, p in frames) < 10_000 + 2_000


async def test_a_batch_larger_than_the_cap_does_not_close_a_reading_client() -> None:
    hub = Hub(max_buffer=10_000)
    conn, t = conn_for(hub, "*")
    for _ in range(3):
        batch = [entry("x", size=1_000) for _ in range(20)]  # ~20 kB, twice the cap
        hub.dispatch(batch)
        got = item_ids(t.read())
        await drained(hub, conn)  # past the hold mark: the rest comes from the hub's queue
        assert got + item_ids(t.read()) == [e.id for e in batch]
    assert not conn.closed


async def test_closed_slow_consumer_is_aborted_if_it_never_reads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(fanout, "ABORT_AFTER", 0.01)
    hub = Hub(max_buffer=1_000)
    _, t = conn_for(hub, "*")
    hub.dispatch([entry("x", size=2_000)])
    hub.dispatch([entry("x", size=2_000)])
    assert t.closing and not t.aborted
    await asyncio.wait_for(t.aborted_event.wait(), 5)


async def test_control_messages_count_towards_the_cap() -> None:
    hub = Hub(max_buffer=1_000)
    conn, t = conn_for(hub, "*")
    for _ in range(200):
        hub.send(conn, b"\x81\x0f" + b'{"type":"pong"}')
    assert conn.closed
    assert close_of(t.read()) == (CloseCode.SLOW_CONSUMER, "slow consumer")


def test_connection_whose_transport_is_closing_is_dropped() -> None:
    hub = Hub()
    conn, t = conn_for(hub, "world")
    t.closing = True
    hub.dispatch([entry("world")])
    assert conn.closed and conn not in hub.conns and hub.index == {}
    assert t.writes == 0


async def test_close_sends_the_code_and_reason() -> None:
    hub = Hub()
    conn, t = conn_for(hub, "*")
    hub.close(conn, 1001, "server shutting down")
    hub.close(conn, 4008, "again")  # a second close is a no-op
    assert t.read() == [(8, struct.pack("!H", 1001) + b"server shutting down")]
    hub.dispatch([entry("x")])
    assert t.read() == []


async def test_sse_close_ends_the_chunked_body_and_writes_no_websocket_frame() -> None:
    hub = Hub()
    conn, t = conn_for(hub, "*", sse=True)
    hub.close(conn, CloseCode.SLOW_CONSUMER, "slow consumer")
    assert t.unread == b"1d\r\n: closed 4008 slow consumer\n\n\r\n0\r\n\r\n" and t.closing


# --- replay buffering ---------------------------------------------------------------


def test_replay_holds_live_items_then_sends_them_after_history() -> None:
    hub = Hub()
    conn, t = conn_for(hub, "world")
    history = [entry("world") for _ in range(3)]
    hub.begin_replay(conn)
    live = [entry("world"), entry("sport"), entry("world")]
    hub.dispatch(live)
    assert t.read() == []  # held, not written
    hub.write(conn, history)
    hub.end_replay(conn)
    assert item_ids(t.read()) == [e.id for e in history] + [live[0].id, live[2].id]
    assert conn.holding is None
    e = entry("world")
    hub.dispatch([e])  # live again
    assert item_ids(t.read()) == [e.id]


def test_replay_overlap_is_sent_once() -> None:
    hub = Hub()
    conn, t = conn_for(hub, "*")
    es = [entry("x") for _ in range(6)]
    hub.begin_replay(conn)
    hub.dispatch(es[3:])
    hub.write(conn, es[:5])  # history read later than the reader: overlaps the buffer
    hub.end_replay(conn)
    assert item_ids(t.read()) == [e.id for e in es]


def test_begin_replay_twice_keeps_the_buffer() -> None:
    hub = Hub()
    conn, t = conn_for(hub, "*")
    hub.begin_replay(conn)
    e = entry("x")
    hub.dispatch([e])
    hub.begin_replay(conn)
    hub.end_replay(conn)
    assert item_ids(t.read()) == [e.id]


async def test_held_items_over_the_cap_are_dropped_and_their_window_owed() -> None:
    """Over its cap a replaying connection is not closed: what it held is dropped,
    the window it was in is owed (from the stream), and holding goes on after it."""
    hub = Hub(max_buffer=5_000)
    hub.start(ZERO)
    replaying, rt = conn_for(hub, "world")
    other, ot = conn_for(hub, "world")
    hub.begin_replay(replaying)
    dropped = [entry("world", size=1_000) for _ in range(6)]  # 6 KB: over the cap
    hub.dispatch(dropped)
    assert item_ids(ot.read()) == [e.id for e in dropped]
    await drained(hub, other)
    assert not replaying.closed
    kept = [entry("world", size=1_000)]
    hub.dispatch(kept)
    owed = hub.end_replay(replaying)
    assert owed == Window(ZERO, kept[-1].key), "the window of everything dropped"
    assert rt.read() == [] and replaying.state.replaying, "still holding"
    hub.write(replaying, hub.recent_window(owed) or [])  # what the session replays
    got = item_ids(rt.read())
    await drained(hub, replaying)
    later = [entry("world")]
    hub.dispatch(later)
    assert hub.end_replay(replaying) is None
    got += item_ids(rt.read())
    assert got == [e.id for e in dropped + kept + later], "each once, in order"


async def test_a_connection_that_overflows_past_max_spills_is_closed_alone() -> None:
    hub = Hub(max_buffer=5_000)
    replaying, rt = conn_for(hub, "world")
    other, ot = conn_for(hub, "world")
    hub.begin_replay(replaying)
    sent = []
    for _ in range(MAX_SPILLS + 1):
        batch = [entry("world", size=1_000) for _ in range(6)]
        sent += [e.id for e in batch]
        hub.dispatch(batch)  # must not raise while closing a connection mid-batch
        got = item_ids(ot.read())
        await drained(hub, other)
        assert got + item_ids(ot.read()) == [e.id for e in batch]
    assert replaying.closed and replaying.holding is not None
    assert close_of(rt.read()) == (CloseCode.SLOW_CONSUMER, "slow consumer")
    assert hub.position == parse(sent[-1])
    assert hub.index == {"world": {other}}


async def test_overflow_past_max_spills_with_several_replaying_connections() -> None:
    hub = Hub(max_buffer=2_000)
    conns = [conn_for(hub, "world", "*") for _ in range(5)]
    for conn, _ in conns:
        hub.begin_replay(conn)
    for _ in range(MAX_SPILLS + 1):
        hub.dispatch([entry("world", size=1_500) for _ in range(3)])
    assert all(conn.closed for conn, _ in conns)
    assert hub.index == {}


# --- the recent-items window ---------------------------------------------------------


def test_recent_window_serves_from_memory() -> None:
    hub = Hub(recent=100)
    hub.start(ZERO)
    es = [entry("x") for _ in range(10)]
    hub.dispatch(es)
    window = Window(es[2].key, es[6].key)
    got = hub.recent_window(window)
    assert got is not None and [e.id for e in got] == [e.id for e in es[3:7]]


def test_recent_window_says_none_when_memory_does_not_reach_back() -> None:
    hub = Hub(recent=5)
    start = entry("x")
    hub.start(start.key)
    es = [entry("x") for _ in range(20)]
    hub.dispatch(es)
    assert len(hub.recent) <= 10
    assert hub.recent_window(Window(start.key, es[-1].key)) is None
    assert hub.recent_window(Window(ZERO, es[-1].key)) is None
    kept = hub.recent_window(Window(es[-3].key, es[-1].key))
    assert kept is not None and [e.id for e in kept] == [es[-2].id, es[-1].id]


def test_recent_latest_from_memory_and_when_it_must_ask_redis() -> None:
    hub = Hub(recent=100)
    hub.start(ZERO)  # the stream was empty: memory holds everything
    es = [entry("world" if i % 2 else "sport") for i in range(10)]
    hub.dispatch(es)
    latest = hub.recent_latest(frozenset({"world"}), 3, hub.position)
    assert latest is not None and [e.id for e in latest] == [es[5].id, es[7].id, es[9].id]
    few = hub.recent_latest(frozenset({"world"}), 50, hub.position)
    assert few is not None and len(few) == 5  # all there are
    upto = hub.recent_latest(frozenset({"*"}), 2, es[4].key)
    assert upto is not None and [e.id for e in upto] == [es[3].id, es[4].id]

    later = Hub(recent=100)
    later.start(es[0].key)  # started on a non-empty stream: older items are in Redis
    later.dispatch(es[1:])
    assert later.recent_latest(frozenset({"world"}), 50, later.position) is None


# --- helpers ------------------------------------------------------------------------


def parse(eid: str) -> StreamKey:
    ms, seq = eid.split("-")
    return int(ms), int(seq)


# --- a connection that is behind -------------------------------------------------------


async def drained(hub: Hub, conn: Conn) -> None:
    """Wait (at most 5 s) until the hub has flushed what it queued for ``conn``."""
    async with asyncio.timeout(5):
        while conn.held is not None:  # noqa: ASYNC110 - the hub's flusher polls too
            await asyncio.sleep(0.001)


async def test_overlapping_writes_while_behind_are_sent_once() -> None:
    hub = Hub(max_buffer=1 << 20)
    conn, t = conn_for(hub, "*")
    first = entry("x", size=fanout.HOLD_AT)  # leaves the socket behind
    hub.dispatch([first])
    assert conn.held is not None
    live = [entry("x"), entry("x")]
    hub.dispatch(live)  # queued by the hub
    hub.write(conn, [*live, later := entry("x")])  # e.g. a replay page overlapping them
    hub.write(conn, live)  # and one entirely old
    got = item_ids(t.read())
    await drained(hub, conn)
    got += item_ids(t.read())
    assert got == [first.id, live[0].id, live[1].id, later.id]


async def test_behind_connection_catches_up_in_order() -> None:
    hub = Hub(max_buffer=1 << 20)
    conn, t = conn_for(hub, "*")
    sent = []
    got: list[str] = []
    for _ in range(10):
        batch = [entry("x", size=20_000) for _ in range(4)]
        sent += [e.id for e in batch]
        hub.dispatch(batch)
        got += item_ids(t.read())
        await drained(hub, conn)
    got += item_ids(t.read())
    assert got == sent and not conn.closed


# --- keep-alive -----------------------------------------------------------------------


async def test_keepalive_pings_and_closes_what_never_answers() -> None:
    hub = Hub()
    silent, st = conn_for(hub, "*")
    answering, at = conn_for(hub, "*")
    sse, sset = conn_for(hub, "*", sse=True)
    comment = b": keep-alive\n\n"
    await hub.keepalive(comment)
    assert st.read() == [(9, b"")] and at.read() == [(9, b"")]
    assert bytes(sset.unread) == comment
    hub.pong(answering)
    await hub.keepalive(comment)  # a whole interval later
    assert close_of(st.read()) == (1002, "ping timeout") and silent.closed
    assert at.read() == [(9, b"")] and not answering.closed
    assert not sse.closed  # SSE has no pongs; a dead one fails on write


# --- a dispatch in turns ----------------------------------------------------------


async def test_a_dispatch_in_turns_yields_between_turns_and_writes_each_connection_once() -> None:
    hub = Hub()
    conns = [conn_for(hub, "world") for _ in range(2 * fanout.WRITE_TURN + 10)]
    batch = [entry("world") for _ in range(3)]
    ids = [e.id for e in batch]
    task = asyncio.create_task(hub.dispatch_in_turns(batch))
    await asyncio.sleep(0)  # the first turn ran; the dispatch gave the loop back
    assert sum(1 for _, t in conns if t.writes) == fanout.WRITE_TURN
    # Told before the rest are written: a subscription made now starts after the batch.
    assert hub.position == batch[-1].key
    await task
    for _, transport in conns:
        assert transport.writes == 1 and item_ids(transport.read()) == ids


async def test_a_connection_touched_between_turns_gets_its_share_first_and_once() -> None:
    hub = Hub()
    conns = [conn_for(hub, "world") for _ in range(fanout.WRITE_TURN + 5)]
    batch = [entry("world") for _ in range(3)]
    ids = [e.id for e in batch]
    task = asyncio.create_task(hub.dispatch_in_turns(batch))
    await asyncio.sleep(0)
    waiting = [(c, t) for c, t in conns if not t.writes][:5]  # the turn to come
    sent, replaying, closed, retagged, gone = (c for c, _ in waiting)
    t_sent, t_replay, t_closed, t_retag, t_gone = (t for _, t in waiting)
    hub.send(sent, frames.ws_message({"type": "pong"}))
    hub.begin_replay(replaying)
    hub.close(closed, CloseCode.GOING_AWAY, "bye")
    hub.retag(retagged, frozenset())
    hub.detach(gone)
    await task
    got = t_sent.read()
    assert item_ids(got[:3]) == ids and orjson.loads(got[3][1]) == {"type": "pong"}
    assert item_ids(t_replay.read()) == ids
    got = t_closed.read()
    assert item_ids(got[:3]) == ids and close_of(got) == (CloseCode.GOING_AWAY, "bye")
    assert item_ids(t_retag.read()) == ids
    assert t_gone.writes == 0
    for conn, transport in conns:
        if (conn, transport) not in waiting:
            assert transport.writes == 1 and item_ids(transport.read()) == ids


class BrokenTransport(FakeTransport):
    """A transport whose write raises, as a bug in the hub or the loop could make any write do."""

    def write(self, data: bytes) -> None:
        raise RuntimeError("write on a broken transport")


async def test_a_write_that_raises_mid_dispatch_leaves_every_other_share_written() -> None:
    """The batch is not read again (the position has moved past it): the connection
    whose write raised is closed, to resume with ``since``; the other connections'
    shares must not stay owed, where later batches would pile onto them unwritten."""
    hub = Hub()
    failing = BrokenTransport()
    broken = Conn(failing)
    hub.attach(broken)
    hub.retag(broken, frozenset({"first"}))  # the first entry's only target: written first
    conns = [conn_for(hub, "world") for _ in range(fanout.WRITE_TURN + 5)]
    batch = [entry("first"), entry("world"), entry("world")]
    await hub.dispatch_in_turns(batch)
    assert broken.closed and broken not in hub.conns and failing.aborted
    later = [entry("world")]
    await hub.dispatch_in_turns(later)
    for _, transport in conns:
        assert item_ids(transport.read()) == [e.id for e in batch[1:] + later]


async def test_a_dispatch_cancelled_between_turns_writes_the_rest_at_once() -> None:
    hub = Hub()
    conns = [conn_for(hub, "world") for _ in range(2 * fanout.WRITE_TURN)]
    batch = [entry("world"), entry("world")]
    task = asyncio.create_task(hub.dispatch_in_turns(batch))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for conn, transport in conns:
        assert conn.out is None and item_ids(transport.read()) == [e.id for e in batch]


async def test_a_second_dispatch_between_turns_writes_each_connection_its_own_items() -> None:
    """Only the reader dispatches, one batch at a time; should a second dispatch come
    between another's turns, a share still owed takes in its items and goes out whole,
    never as the bytes of the first batch (the one-encoding-per-batch shortcut)."""
    hub = Hub()
    for _ in range(fanout.WRITE_TURN + 5):
        conn_for(hub, "world", "sport")  # their share is the whole batch: its bytes are shared
    only = [conn_for(hub, "world") for _ in range(fanout.WRITE_TURN + 5)]
    first = [entry("world"), entry("sport")]
    task = asyncio.create_task(hub.dispatch_in_turns(first))
    await asyncio.sleep(0)
    second = [entry("world")]
    hub.dispatch(second)
    await task
    for _, transport in only:
        assert item_ids(transport.read()) == [first[0].id, second[0].id]


async def test_an_entry_taken_mid_pass_rides_in_the_shares_not_written_yet() -> None:
    """The connections a pass has not reached get both entries in one write; the ones
    it already wrote get the new one in the next pass, which the next write_owed is."""
    hub = Hub()
    conns = [conn_for(hub, "world") for _ in range(2 * fanout.WRITE_TURN)]
    first, second = entry("world"), entry("world")
    task = asyncio.create_task(hub.dispatch_in_turns([first]))
    await asyncio.sleep(0)  # the first turn is written
    written = [(c, t) for c, t in conns if t.writes]
    reached = [(c, t) for c, t in conns if not t.writes]
    assert len(written) == fanout.WRITE_TURN
    hub.take([second])
    assert hub.position == second.key
    await task
    for _, transport in reached:
        assert transport.writes == 1 and item_ids(transport.read()) == [first.id, second.id]
    assert len(hub.owed) == 1 and all(t.writes == 1 for _, t in written)
    await hub.write_owed()
    assert not hub.owed
    for _, transport in written:
        assert transport.writes == 2 and item_ids(transport.read()) == [first.id, second.id]


async def test_shares_grown_mid_pass_are_each_connections_own() -> None:
    """A share as long as everything its group took shares its bytes; a shorter one
    (its tags missed some) is encoded for itself, never given the longer one's bytes."""
    hub = Hub()
    both = [conn_for(hub, "world", "sport") for _ in range(fanout.WRITE_TURN + 3)]
    world = [conn_for(hub, "world") for _ in range(fanout.WRITE_TURN + 3)]
    first = [entry("world"), entry("sport")]
    task = asyncio.create_task(hub.dispatch_in_turns(first))
    await asyncio.sleep(0)
    later = [entry("world"), entry("sport"), entry("world")]
    hub.take(later)
    await task
    await hub.write_owed()
    every = [e.id for e in first + later]
    for _, transport in both:
        assert item_ids(transport.read()) == every
    for _, transport in world:
        assert item_ids(transport.read()) == [e.id for e in first + later if "world" in e.tags]


async def test_a_cancelled_pass_writes_the_groups_after_it_too() -> None:
    hub = Hub()
    conns = [conn_for(hub, "world") for _ in range(2 * fanout.WRITE_TURN)]
    first, second = entry("world"), entry("world")
    task = asyncio.create_task(hub.dispatch_in_turns([first]))
    await asyncio.sleep(0)
    hub.take([second])  # a group of the connections already written
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not hub.owed
    for conn, transport in conns:
        assert conn.out is None and item_ids(transport.read()) == [first.id, second.id]


# --- a dispatch in turns against everything that can happen between turns -------------

_SSE_ITEM = re.compile(rb"event: item\ndata: ([^\n]*)\n\n")


def received(conn: Conn, transport: FakeTransport) -> list[tuple[str, bool]]:
    """The peer reads everything sent: (id, sent ahead) per item message, in order."""
    if conn.sse:
        data, transport.unread = bytes(transport.unread), bytearray()
        payloads = _SSE_ITEM.findall(data)
    else:
        payloads = [
            line for op, frame in transport.read() if op == 1 for line in frame.split(b"\n")
        ]
    got = []
    for payload in payloads:
        msg = orjson.loads(payload)
        if msg.get("type", "item") == "item" and "item" in msg:
            got.append((msg["item"]["id"], msg.get("ahead") is True))
        elif "id" in msg:  # an SSE event's data is the item itself
            got.append((msg["id"], False))
    return got


class Meddler:
    """Many connections, and a random operation on some of them whenever asked."""

    def __init__(self, hub: Hub, rng: random.Random, tags: tuple[str, ...]) -> None:
        self.hub, self.rng, self.tags = hub, rng, tags
        #: Every entry the hub took, in order.
        self.sent: list[Entry] = []
        self.conns: list[tuple[Conn, FakeTransport]] = []
        for i in range(3 * fanout.WRITE_TURN):
            transport = FakeTransport()
            conn = Conn(transport, sse=i % 5 == 4, batch=i % 2 == 0)
            hub.attach(conn)
            hub.retag(conn, frozenset(rng.sample(tags, rng.randint(1, 2))))
            self.conns.append((conn, transport))
        self.got: dict[Conn, list[tuple[str, bool]]] = {c: [] for c, _ in self.conns}
        #: Unsubscribed or closed: only once and in order are checked.
        self.changed: set[Conn] = set()
        self.stalled: set[Conn] = set()

    def meddle(self) -> None:
        """A few random operations, then the peers that are not stalled read."""
        hub, rng = self.hub, self.rng
        for _ in range(rng.randint(0, 40)):
            conn, transport = rng.choice(self.conns)
            op = rng.randrange(8)
            if op == 0:
                pong = frames.sse_comment("k") if conn.sse else frames.ws_message({"type": "pong"})
                hub.send(conn, pong)
            elif op == 1:
                self.stalled.symmetric_difference_update({conn})
            elif op == 2 and conn.holding is None:
                hub.begin_replay(conn)
            elif op == 3 and conn.holding is not None:
                assert hub.end_replay(conn) is None  # under the cap: nothing dropped
            elif op == 4 and len(conn.keys) == 2:
                hub.retag(conn, frozenset({rng.choice(self.tags)}))
                self.changed.add(conn)
            elif op == 5 and rng.random() < 0.05:
                hub.close(conn, CloseCode.GOING_AWAY, "bye")
                self.changed.add(conn)
            elif op == 6 and rng.random() < 0.1:  # the reader takes more mid-pass
                self.take(rng.randint(1, 3))
            if conn not in self.stalled:
                self.got[conn] += received(conn, transport)

    def take(self, n: int) -> list[Entry]:
        """``n`` new entries, taken by the hub (routed, written by a later pass)."""
        rng = self.rng
        batch = [
            entry(
                rng.choice(self.tags),
                size=rng.choice((0, 0, 25_000)),
                urgency=rng.choice((1, 5, 5)),
            )
            for _ in range(n)
        ]
        self.sent += batch
        self.hub.take(batch)
        return batch

    async def settle(self) -> None:
        """Replays end, every peer reads until the hub holds nothing more."""
        await self.hub.write_owed()
        self.stalled.clear()
        for conn, _ in self.conns:
            if conn.holding is not None:
                assert self.hub.end_replay(conn) is None
        async with asyncio.timeout(5):
            while self.hub.behind or any(t.unread for _, t in self.conns):
                for conn, transport in self.conns:
                    self.got[conn] += received(conn, transport)
                await asyncio.sleep(fanout.FLUSH_EVERY)  # the hub's flusher writes the backlogs


async def test_each_connection_gets_each_item_once_in_order_whatever_happens_between_turns() -> (
    None
):
    """Random operations between the turns of many dispatches: replies, replays, stalled
    readers (behind, urgent items ahead), unsubscribes, closes and new entries taken
    mid-pass, on plain, batched and SSE connections. Each connection gets each item at
    most once and the rest in stream order; one left subscribed and open gets every item
    of its tags."""
    rng = random.Random(20261204)
    hub = Hub(max_buffer=1 << 20)
    tags = ("a", "b")
    peers = Meddler(hub, rng, tags)
    for _ in range(15):
        peers.take(rng.randint(1, 6))
        task = asyncio.create_task(hub.write_owed())
        while not task.done():
            peers.meddle()
            await asyncio.sleep(0 if rng.random() < 0.8 else fanout.FLUSH_EVERY * 1.5)
        await task
    await peers.settle()
    assert any(c.closed for c in peers.changed) and any(not c.closed for c in peers.changed)
    for conn, got in peers.got.items():
        ids = [i for i, _ in got]
        assert len(ids) == len(set(ids)), "an item twice"
        in_turn = [parse(i) for i, ahead in got if not ahead]
        assert in_turn == sorted(in_turn), "out of stream order"
        if conn not in peers.changed and not conn.closed:
            assert sorted(ids, key=parse) == [e.id for e in peers.sent if e.matches(conn.keys)]
