"""The gateway's small units by plain calls: connection states, backlog, recent window,
keep-alive, the handover rules and the replay merge. No sockets, no Redis."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from typing import cast

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from wire.core.entitlements import EVERYTHING
from wire.core.entry import Entry
from wire.core.ids import ZERO, StreamKey
from wire.core.resume import Latest, Since, Window, narrowed
from wire.gateway import handover, replay
from wire.gateway.backlog import Backlog
from wire.gateway.hub import Hub
from wire.gateway.keepalive import Pings, sweep
from wire.gateway.recent import Recent
from wire.gateway.state import (
    BEHIND,
    CATCH_UP,
    CLOSE,
    CLOSED,
    FALL_BEHIND,
    GO_LIVE,
    LIVE,
    REPLAY,
    REPLAYING,
    REPLAYING_BEHIND,
    TRANSITIONS,
    Event,
    IllegalTransition,
    State,
    step,
)
from wire.storage.store import Store


def entry(
    ms: int, urgency: int = 5, guid: str | None = None, size: int = 0, withdrawal: bool = False
) -> Entry:
    body = b'{"id":"%d-0","x":"%s"}' % (ms, b"x" * size)
    return Entry(f"{ms}-0", ("world",), urgency, guid or f"g{ms}", body, withdrawal)


def keys(entries: list[Entry] | None) -> list[StreamKey]:
    assert entries is not None
    return [e.key for e in entries]


# --- connection states ---------------------------------------------------------


@pytest.mark.parametrize(("state", "event"), list(itertools.product(State, Event)))
def test_every_state_and_event_lands_where_the_table_says_or_raises(
    state: State, event: Event
) -> None:
    target = TRANSITIONS[state].get(event)
    if target is None:
        with pytest.raises(IllegalTransition, match=f"{event.name} .* {state.name}"):
            step(state, event)
    else:
        assert step(state, event) is target


def test_the_table_spells_out_replaying_and_behind_together() -> None:
    # The combination the old Optional fields allowed implicitly is one state.
    assert step(step(LIVE, REPLAY), FALL_BEHIND) is REPLAYING_BEHIND
    assert step(step(LIVE, FALL_BEHIND), REPLAY) is REPLAYING_BEHIND
    assert step(REPLAYING_BEHIND, GO_LIVE) is BEHIND
    assert step(REPLAYING_BEHIND, CATCH_UP) is REPLAYING
    assert {s for s in State if s.replaying} == {REPLAYING, REPLAYING_BEHIND}
    assert {s for s in State if s.behind} == {BEHIND, REPLAYING_BEHIND}


def test_closed_is_terminal() -> None:
    assert all(step(s, CLOSE) is CLOSED for s in State if s is not CLOSED)
    assert set(TRANSITIONS[CLOSED].values()) == {CLOSED}
    for event in (CLOSE, FALL_BEHIND, CATCH_UP):
        with pytest.raises(IllegalTransition):
            step(CLOSED, event)


def test_every_state_is_in_the_table() -> None:
    assert set(TRANSITIONS) == set(State)


# --- backlog --------------------------------------------------------------------


def test_backlog_queues_and_releases_in_order() -> None:
    backlog = Backlog()
    assert backlog.add([entry(1), entry(2)], ZERO, overtake=True) == []  # nothing to overtake
    assert backlog.add([entry(3)], ZERO, overtake=True) == []
    assert backlog.size == 3 * len(entry(1).json)
    out, last = backlog.release()
    assert keys(out) == [(1, 0), (2, 0), (3, 0)] and last == (3, 0)
    assert backlog.entries == [] and backlog.size == 0 and backlog.ahead is None


def test_urgent_entries_overtake_a_queue_and_are_skipped_on_release() -> None:
    backlog = Backlog()
    backlog.add([entry(1)], ZERO, overtake=True)
    urgent = backlog.add([entry(2), entry(3, urgency=1), entry(4, urgency=2)], ZERO, True)
    assert keys(urgent) == [(3, 0), (4, 0)]
    assert backlog.ahead == {(3, 0), (4, 0)}
    assert keys(backlog.entries) == [(1, 0), (2, 0), (3, 0), (4, 0)]  # places kept
    out, last = backlog.release()
    assert keys(out) == [(1, 0), (2, 0)] and last == (4, 0)  # the cursor covers all


def test_without_overtaking_urgent_entries_wait_their_turn() -> None:
    backlog = Backlog()
    backlog.add([entry(1)], ZERO, overtake=True)
    assert backlog.add([entry(2, urgency=1)], ZERO, overtake=False) == []  # SSE
    assert backlog.ahead is None


def test_backlog_takes_only_what_comes_after_its_tail_or_what_was_sent() -> None:
    backlog = Backlog()
    assert backlog.add([entry(1), entry(2)], (1, 0), overtake=True) == []
    assert backlog.add([entry(2, urgency=1), entry(3)], (1, 0), overtake=True) == []
    assert backlog.add([entry(1)], (1, 0), overtake=True) == []
    assert keys(backlog.entries) == [(2, 0), (3, 0)]


def test_releasing_an_empty_backlog_moves_no_cursor() -> None:
    assert Backlog().release() == ([], None)


# --- the recent window ---------------------------------------------------------------


def test_recent_window_covers_what_was_added_after_its_start() -> None:
    recent = Recent(size=100)
    assert recent.window(Window(ZERO, (9, 0))) is None  # not started
    recent.start((1, 0))
    recent.add([entry(i) for i in range(2, 8)])
    assert keys(recent.window(Window((3, 0), (5, 0)))) == [(4, 0), (5, 0)]
    assert recent.window(Window(ZERO, (5, 0))) is None  # reaches back before the start


def test_recent_window_evicts_by_count_and_by_bytes() -> None:
    by_count = Recent(size=3)
    by_count.start(ZERO)
    by_count.add([entry(i) for i in range(1, 8)])  # past twice the count
    assert keys(by_count.entries) == [(5, 0), (6, 0), (7, 0)] and by_count.base == (4, 0)
    one = len(entry(1, size=100).json)
    by_bytes = Recent(size=100, max_bytes=4 * one)
    by_bytes.start(ZERO)
    by_bytes.add([entry(i, size=100) for i in range(1, 6)])
    assert by_bytes.total <= 3 * one
    assert by_bytes.total == sum(len(e.json) for e in by_bytes.entries)


def test_a_withdrawal_removes_its_story_from_the_window() -> None:
    recent = Recent()
    recent.start(ZERO)
    recent.add([entry(1, guid="a"), entry(2, guid="b"), entry(3, guid="a")])
    recent.add([entry(4, guid="a", withdrawal=True)])
    assert keys(recent.entries) == [(2, 0), (4, 0)]
    assert recent.total == sum(len(e.json) for e in recent.entries)


def test_recent_latest_knows_when_it_must_ask_redis() -> None:
    recent = Recent()
    recent.start(ZERO)  # an empty stream: everything is here
    recent.add([entry(i) for i in range(1, 6)])
    assert keys(recent.latest(frozenset({"world"}), 2, (4, 0))) == [(3, 0), (4, 0)]
    assert keys(recent.latest(frozenset({"world"}), 9, (9, 0))) == [(i, 0) for i in range(1, 6)]
    later = Recent()
    later.start((1, 0))
    later.add([entry(2)])
    assert later.latest(frozenset({"world"}), 9, (9, 0)) is None


# --- keep-alive -----------------------------------------------------------------------


def test_pings_owe_an_answer_until_one_comes() -> None:
    pings: Pings[str] = Pings()
    pings.pinged("a")
    pings.pinged("b")
    pings.answered("a")
    assert pings.overdue() == ["b"]
    pings.answered("b")
    pings.answered("b")  # gone twice: no error
    assert pings.overdue() == []


async def test_a_sweep_visits_every_connection_once_in_steps() -> None:
    seen: list[int] = []
    await sweep(list(range(7)), seen.append, per_step=3, spread=0)
    assert seen == list(range(7))
    await sweep([], seen.append, per_step=3, spread=1.0)  # nothing, no division by zero
    assert seen == list(range(7))


# --- the handover: the rules that make raw writes safe -----------------------------------------


async def test_a_hub_response_refuses_every_send() -> None:
    ws = handover.HubResponse(autoping=False, compress=False)
    for send in (ws.send_str, ws.send_bytes, ws.send_json, ws.send_frame, ws.ping, ws.pong):
        with pytest.raises(handover.UnsafeHandover):
            await send("x")


@pytest.mark.parametrize(
    "ws",
    [
        web.WebSocketResponse(autoping=False, compress=False),  # send_* not refused
        handover.HubResponse(autoping=False, compress=True),
        handover.HubResponse(autoping=True, compress=False),
        handover.HubResponse(autoping=False, compress=False, heartbeat=30),
        handover.HubResponse(autoping=False, compress=False),  # not prepared
    ],
)
def test_the_websocket_handover_refuses_what_is_unsafe(ws: web.WebSocketResponse) -> None:
    request = make_mocked_request("GET", "/v1/ws")
    with pytest.raises(handover.UnsafeHandover):
        handover.websocket(request, ws, EVERYTHING, 0)


def test_the_sse_handover_refuses_what_is_unsafe() -> None:
    request = make_mocked_request("GET", "/v1/sse")
    compressed = web.StreamResponse()
    compressed.enable_chunked_encoding()
    compressed.enable_compression()
    for resp in (web.StreamResponse(), compressed):  # not chunked; compressed
        with pytest.raises(handover.UnsafeHandover):
            handover.sse(request, resp, EVERYTHING, 0)


# --- the replay merge ---------------------------------------------------------------------


async def pages(*chunks: list[int]) -> AsyncIterator[list[Entry]]:
    for chunk in chunks:
        yield [entry(ms) for ms in chunk]


async def merged(*streams: AsyncIterator[list[Entry]]) -> list[list[int]]:
    return [[e.key[0] for e in page] async for page in replay.merge(list(streams))]


async def test_merge_interleaves_sources_in_stream_order_each_key_once() -> None:
    got = await merged(pages([1, 3], [5, 7]), pages([2, 3, 4]), pages(), pages([7, 8]))
    assert got == [[1, 2, 3, 4, 5, 7, 8]]


async def test_merge_hands_out_bounded_pages() -> None:
    n = replay.SEND_PAGE
    got = await merged(pages(list(range(1, n + 1)), [n + 1]), pages([n + 2]))
    assert [len(p) for p in got] == [n, 2]
    assert await merged() == []


# --- retention gaps in a catch-up ------------------------------------------------


def test_union_merges_ranges_that_overlap_or_touch_in_stream_order() -> None:
    w = [Window((5, 0), (9, 0)), Window((1, 0), (3, 0))]
    w += [Window((3, 0), (4, 0)), Window((6, 0), (7, 0))]
    assert replay.union(w) == [Window((1, 0), (4, 0)), Window((5, 0), (9, 0))]
    assert replay.union([]) == []


def cut(history: replay.History, *ms: int) -> list[list[StreamKey] | Window]:
    """``history.cut`` of entries at ``ms``, each run of entries as its keys."""
    parts = history.cut([entry(m) for m in ms])
    return [p if isinstance(p, Window) else keys(p) for p in parts]


def test_a_gap_is_told_before_the_first_entry_past_it_once_and_entries_in_it_go_first() -> None:
    history = replay.History(cast(Hub, None), cast(Store, None), 100)
    # Two sources found retention past their cursors: (2, 6] and (4, 6].
    history.gaps += [Window((2, 0), (6, 0)), Window((4, 0), (6, 0))]
    # 3 is inside the gap: another source had read it before retention did.
    assert cut(history, 1, 3, 7, 8) == [[(1, 0), (3, 0)], Window((2, 0), (6, 0)), [(7, 0), (8, 0)]]
    assert history.gaps == [] and cut(history, 9) == [[(9, 0)]]
    history.gaps += [Window((9, 0), (12, 0)), Window((10, 0), (11, 0))]
    assert cut(history, 10) == [[(10, 0)]], "not past the gap yet"
    assert history.rest() == [Window((9, 0), (12, 0))] and history.gaps == []


def test_what_a_catch_up_still_owes_keeps_only_the_tags_still_subscribed() -> None:
    source = Since(Window(ZERO, (9, 0)), frozenset({"news", "sport"}))
    assert narrowed(source, frozenset({"news", "sport", "arts"})) is source
    assert narrowed(source, frozenset({"news"})) == Since(Window(ZERO, (9, 0)), frozenset({"news"}))
    assert narrowed(source, frozenset({"arts"})) is None
    latest = Latest(frozenset({"sport"}), 10, (9, 0))
    assert narrowed(latest, frozenset({"news"})) is None
