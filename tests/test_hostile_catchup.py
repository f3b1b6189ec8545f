"""Hostile pass on catch-ups: takeovers by plain subscribes, and retention overtaking a read.

Real servers, real sockets, real Redis. The promises under test (docs/protocol.md,
"Resume", "Retention: history_truncated", "Slow consumers"):

- no item lost without a ``history_truncated`` covering it, each range told
  once, before every item after it (nothing inside it follows; an item of the
  range that another merged source had read before retention removed it goes
  out before it);
- nothing twice or out of stream order on one connection;
- no item of a tag from before that tag's ``subscribed`` when the subscribe
  had no history, none of an unsubscribed tag after the ``subscribed`` without it;
- a partner's grant never widened by a window read again from the stream;
- memory held for a connection bounded whatever it sends while stalled.

Internals are only looked at to wait for a state (a catch-up stalled on the
socket, a takeover done), never patched.
"""

from __future__ import annotations

import asyncio
import functools
import re
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import websockets

from tests.conftest import Server, ServerFactory
from tests.support import batch_ids, item, post, replaying_conn, stalled_ws, wait_for
from tests.test_hostile_pass import spy_redis_pages
from tests.test_replay_overflow import (
    BODY,
    CAP,
    HISTORY,
    LIVE,
    dispatched,
    overtake,
    partner_server,
    publish_many,
    read_through,
    sport_and_secret,
    stalled,
    stalled_partner,
    told_gaps,
)
from wire.core.ids import ZERO, StreamKey, format_id, parse_id
from wire.gateway.conn import Conn
from wire.gateway.reader import HUB
from wire.gateway.session import MAX_CATCH_UPS, Session
from wire.web.appkeys import STORE

SINCE = 100
AUTH = {"Authorization": "Bearer editor-token-for-tests"}


# --- waiting on the gateway's state ----------------------------------------------


def catch_up_task() -> asyncio.Task[Any] | None:
    """The one catch-up task running (each test has one connection catching up)."""
    tasks = [t for t in asyncio.all_tasks() if t.get_name() == "wire-catch-up" and not t.done()]
    return tasks[0] if len(tasks) == 1 else None


def awaiting_socket(task: asyncio.Task[Any] | None) -> bool:
    """True while ``task`` waits for its socket to take a page (in ``Session._drained``):
    it has filled the head of every source it merges and written a batch."""
    if task is None or task.done():
        return False
    coro: Any = task.get_coro()
    while coro is not None:
        code = getattr(coro, "cr_code", None)
        if code is not None and code.co_name == "_drained":
            return True
        coro = getattr(coro, "cr_await", None)
    return False


def stalled_now() -> bool:
    return awaiting_socket(catch_up_task())


def session_of(task: asyncio.Task[Any]) -> Session:
    session = task.get_coro().cr_frame.f_locals["self"]  # type: ignore[union-attr]
    assert isinstance(session, Session)
    return session


async def stalled_task() -> asyncio.Task[Any]:
    """The catch-up task, once it waits on a socket that takes nothing."""
    await wait_for(stalled_now, "the catch-up stalled on the socket")
    task = catch_up_task()
    assert task is not None
    return task


async def taken_over(old: asyncio.Task[Any]) -> asyncio.Task[Any]:
    """The catch-up that took ``old`` over, once it is stalled on the socket in turn."""

    def new_one_stalled() -> bool:
        task = catch_up_task()
        return task is not old and awaiting_socket(task)

    await wait_for(new_one_stalled, "the new catch-up to fill its sources and stall")
    task = catch_up_task()
    assert task is not None
    return task


def send(ws: Any, **message: Any) -> Any:
    return ws.send(orjson.dumps(message).decode())


def items_of(msgs: list[dict[str, Any]]) -> list[str]:
    return [m["item"]["id"] for m in msgs if m["type"] == "item"]


def check_gaps(
    msgs: list[dict[str, Any]], wanted: list[str]
) -> list[tuple[int, StreamKey, StreamKey]]:
    """The promises of ``history_truncated``: each item of ``wanted`` not received is in
    a range told; a range told comes before every item after it (no item inside
    it follows it) and is told once. The gaps told."""
    ids = items_of(msgs)
    assert ids == sorted(set(ids), key=parse_id), "once each, in stream order"
    gaps = told_gaps(msgs)
    got = set(ids)
    for h in wanted:
        if h not in got:
            assert any(a < parse_id(h) <= u for _, a, u in gaps), f"{h} lost without a word"
    for i, after, upto in gaps:
        inside = [
            m["item"]["id"]
            for m in msgs[i:]
            if m["type"] == "item" and after < parse_id(m["item"]["id"]) <= upto
        ]
        assert not inside, (
            f"history_truncated told for ({format_id(after)}, {format_id(upto)}] "
            f"(message {i}), then {len(inside)} items inside that range were sent: {inside}"
        )
        overlapping = [(a, u) for j, a, u in gaps if j != i and a < upto and after < u]
        assert not overlapping, (
            f"history_truncated told for ({format_id(after)}, {format_id(upto)}] and again for "
            f"overlapping ranges {[(format_id(a), format_id(u)) for a, u in overlapping]}"
        )
    return gaps


# --- retention overtaking a catch-up that merges several sources -----------------


@pytest.mark.parametrize("since_at", ["the same cursor", "a later cursor"])
async def test_two_sources_overtaken_by_retention_tell_each_gap_once_and_send_nothing_in_it(
    make_server: ServerFactory, http: aiohttp.ClientSession, since_at: str
) -> None:
    """A stalled catch-up on news (read from Redis) is taken over by a subscribe to
    sport with ``since``: two sources (the news history left, and the new
    history for news and sport), each reading Redis a page (about 1 MB) ahead of
    what is sent, each with its own cursor. Retention then trims past both
    cursors. Each source finds the gap on its own; they used to be told as found:

    - ``since`` = 0: both windows start at the connection's last item, their pages
      end at the same entry, and the same ``history_truncated`` was told twice;
    - ``since`` = the 100th item (after what was sent): the new source's page ends
      about 80 entries further; the news source's gap was told, then the ~80
      items the other source had read before the trim, inside the range just
      said to be no longer kept, then a second, overlapping ``history_truncated``.

    Now the items in hand go first and the range is told once.
    """
    server = await make_server(
        max_buffer=CAP, send_buffer=16 * 1024, ping_interval=60, recent_items=1, max_items=1_300
    )
    hub = server.app[HUB]
    news: list[str] = []
    for part in range(2):  # batches under 1 MB
        news += await batch_ids(http, server.base, f"Old news A{part}", 300, "news", BODY)
    sport = await batch_ids(http, server.base, "Old sport", 10, "sport", BODY)
    for part in range(2):
        news += await batch_ids(http, server.base, f"Old news B{part}", 300, "news", BODY)
    await wait_for(functools.partial(dispatched, hub, parse_id(news[-1])), "the history")
    ws = await stalled_ws(server.ws, server.settings.port, "?tags=news&since=0")
    try:
        conn = await replaying_conn(hub.conns)
        first = await stalled_task()
        since = "0" if since_at == "the same cursor" else news[SINCE]
        assert conn.last_key < parse_id(news[SINCE]), "stalled before the 100th item"
        await send(ws, type="subscribe", tags=["sport"], since=since)
        await taken_over(first)
        # Retention passes both sources' cursors (about 500 and 580 entries
        # into the stream): some 1,000 entries trimmed.
        live, msgs = await overtake(http, server, ws)
    finally:
        await ws.close()
    assert told_gaps(msgs), "retention passed the catch-up: history_truncated told"
    check_gaps(msgs, sorted(news + sport, key=parse_id))
    assert items_of(msgs)[-3:] == live


async def test_a_catch_up_that_read_its_whole_window_is_told_of_no_gap(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    """A window of exactly 1,000 entries (a Redis page's count) is read in one page,
    which cannot say the range ended. Retention then trims past the whole window
    while the client reads slowly. Every item was in hand and is sent; the read
    after the last one finds retention past its cursor and used to tell
    ``history_truncated`` for the empty range (upto, upto]: nothing was lost."""
    server = await make_server(
        max_buffer=CAP, send_buffer=16 * 1024, ping_interval=60, recent_items=1, max_items=1_000
    )
    hub = server.app[HUB]
    history: list[str] = []
    for part in range(2):
        history += await batch_ids(http, server.base, f"Old {part}", 500, "news", 300)
    await wait_for(functools.partial(dispatched, hub, parse_id(history[-1])), "the history")
    ws = await stalled_ws(server.ws, server.settings.port, "?tags=news&since=0")
    try:
        await replaying_conn(hub.conns)
        await stalled_task()
        for part in range(3):  # the whole window trimmed
            await batch_ids(http, server.base, f"Other {part}", 400, "other")
        live = await batch_ids(http, server.base, "Live", 3, "news")
        msgs = await read_through(ws, live[-1])
    finally:
        await ws.close()
    assert items_of(msgs) == history + live, "every item once, in order"
    told = [m["message"] for m in msgs if m["type"] == "error"]
    assert not told, f"nothing was lost, yet the client was told: {told}"


# --- unsubscribe, then a plain subscribe of the same tag, during a catch-up -------


async def test_a_tag_unsubscribed_and_subscribed_again_gets_none_of_its_earlier_items(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    """A stalled catch-up on news and sport; the client unsubscribes sport, then
    subscribes to it again without history. That subscribe owes no history: of
    sport, only items from after its ``subscribed`` may follow (docs: "none from
    before it"). The catch-up's remaining history used to keep sport among its
    keys and sent the old sport items after that ``subscribed`` (while the sport
    items held since the catch-up began were not: the client saw old sport,
    a silent hole, then new sport)."""
    server = await make_server(max_buffer=CAP, send_buffer=16 * 1024, ping_interval=60)
    hub = server.app[HUB]
    history = await publish_many(http, server.base, "Before", HISTORY)
    early = await batch_ids(http, server.base, "Early sport", 10, "sport", BODY)
    await wait_for(functools.partial(dispatched, hub, parse_id(early[-1])), "the history")
    ws = await stalled_ws(server.ws, server.settings.port, "?tags=news,sport&since=0")
    try:
        conn = await replaying_conn(hub.conns)
        await stalled_task()
        held = await batch_ids(http, server.base, "Held sport", 3, "sport")
        await wait_for(functools.partial(dispatched, hub, parse_id(held[-1])), "held sport")
        await send(ws, type="unsubscribe", tags=["sport"])
        await wait_for(lambda: "sport" not in conn.keys, "the unsubscribe applied")
        await send(ws, type="subscribe", tags=["sport"])
        await wait_for(lambda: "sport" in conn.keys, "the subscribe applied")
        later = await batch_ids(http, server.base, "Later sport", 3, "sport")
        msgs = await read_through(ws, later[-1])
    finally:
        await ws.close()
    ids = items_of(msgs)
    assert ids == sorted(set(ids), key=parse_id), "once each, in order"
    assert [i for i in ids if i in set(history)] == history, "the news history, all of it"
    replies = [i for i, m in enumerate(msgs) if m["type"] == "subscribed"]
    again = next(i for i in replies if "sport" in msgs[i]["tags"] and i > replies[0])
    sport_after = [i for i in items_of(msgs[again:]) if i in set(early + held + later)]
    assert sport_after == later, (
        "after the plain subscribe to sport, only sport items from after it: got "
        f"{len(set(sport_after) & set(early))} of the {len(early)} old sport items, "
        f"{len(set(sport_after) & set(held))} of the {len(held)} held ones"
    )


# --- regression: plain subscribes during a catch-up --------------------------------


async def test_plain_subscribes_in_a_loop_while_stalled_stay_bounded_and_are_refused_clearly(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    """A client that reads nothing sends plain subscribes (each a new tag) while live
    news arrives. Each takeover hands the held items over as a window of the
    stream: what is held stays under the cap, what is owed under
    ``MAX_CATCH_UPS`` sources; the subscribe past that is ``rate_limited`` and
    changes nothing; then the client reads everything once, in order, and the
    refused subscribe, sent again once live, is accepted."""
    server = await make_server(max_buffer=CAP, send_buffer=16 * 1024, ping_interval=60)
    hub = server.app[HUB]
    async with stalled(server, http, "?tags=news&since=0") as (history, ws, conn):
        task = await stalled_task()
        live: list[str] = []
        most_held = most_owed = 0
        for n in range(MAX_CATCH_UPS + 2):
            live += await publish_many(http, server.base, f"Live {n}", 10)
            await wait_for(functools.partial(dispatched, hub, parse_id(live[-1])), "dispatched")
            await send(ws, type="subscribe", tags=[f"extra{n}"])
            if n < MAX_CATCH_UPS - 1:
                task = await taken_over(task)
            else:
                # Refused: the catch-up goes on as it was, its tags unchanged.
                await wait_for(stalled_now, "the refusal answered")
                await asyncio.sleep(0)  # nothing to wait for: a refusal changes nothing
                assert catch_up_task() is task
                assert f"extra{n}" not in conn.keys
            session = session_of(task)
            assert conn.holding is not None
            most_held = max(most_held, conn.holding.size)
            most_owed = max(most_owed, len(session.owed))
        assert most_held <= CAP, f"{most_held} bytes held for a connection capped at {CAP}"
        assert most_owed <= MAX_CATCH_UPS
        msgs = await read_through(ws, live[-1])
        assert items_of(msgs) == history + live, "every news item once, in order"
        refused = [m for m in msgs if m["type"] == "error"]
        assert [m["code"] for m in refused] == ["rate_limited"] * 3, refused
        assert "catch-ups" in refused[0]["message"]
        await wait_for(lambda: conn.holding is None, "live again")
        await send(ws, type="subscribe", tags=[f"extra{MAX_CATCH_UPS + 1}"])
        reply = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
        assert reply["type"] == "subscribed" and f"extra{MAX_CATCH_UPS + 1}" in reply["tags"]


async def test_a_plain_subscribe_right_after_connecting_with_since_races_nothing_out(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    """``?tags=news&since=0`` and, in the same breath, a plain subscribe to sport: it
    takes over a catch-up that may not have run a line yet. The ``since`` is older
    than retention: ``history_truncated`` exactly once, before any item; every
    news item kept, once, in order; no sport item from before the subscribe."""
    server = await make_server(max_items=200, recent_items=50)
    hub = server.app[HUB]
    news: list[str] = []
    for part in range(3):
        news += await batch_ids(http, server.base, f"Old {part}", 150, "news")
    early = await batch_ids(http, server.base, "Early sport", 5, "sport")
    await wait_for(functools.partial(dispatched, hub, parse_id(early[-1])), "the history")
    for attempt in range(5):
        async with server_ws(server, "?tags=news&since=0") as ws:
            await send(ws, type="subscribe", tags=["sport"])
            later = await batch_ids(http, server.base, f"Later sport {attempt}", 2, "sport")
            msgs = await read_through(ws, later[-1])
        ids = items_of(msgs)
        errors = [i for i, m in enumerate(msgs) if m["type"] == "error"]
        assert len(errors) == 1 and msgs[errors[0]]["code"] == "history_truncated", msgs[:4]
        assert errors[0] < next(i for i, m in enumerate(msgs) if m["type"] == "item")
        [(_, _, trimmed)] = told_gaps(msgs)
        kept = [n for n in news if parse_id(n) > trimmed]
        assert kept, "some news still kept"
        assert not set(ids) & set(early), f"attempt {attempt}: sport from before its subscribe"
        assert ids == kept + later, f"attempt {attempt}: every kept item once, in order"


@asynccontextmanager
async def server_ws(server: Server, query: str) -> AsyncIterator[Any]:
    """A plain reading WebSocket client."""
    ws = await websockets.connect(server.ws + query, ping_interval=None)
    try:
        yield ws
    finally:
        await ws.close()


# --- regression: retention overtaking other kinds of catch-up -----------------------


async def fill_and_stall_then_trim(
    server: Server, http: aiohttp.ClientSession, others: int = 2
) -> list[str]:
    """Once the catch-up stalled: items on another tag push the stream past its limit."""
    await stalled_task()
    for part in range(others):
        await batch_ids(http, server.base, f"Other {part}", 550, "other")
    return await batch_ids(http, server.base, "Live", 3, "news")


async def old_history(server: Server, http: aiohttp.ClientSession) -> list[str]:
    hub = server.app[HUB]
    history: list[str] = []
    for part in range(3):
        history += await batch_ids(http, server.base, f"Old {part}", 400, "news", BODY)
    await wait_for(functools.partial(dispatched, hub, parse_id(history[-1])), "the history")
    return history


def retention_server(make_server: ServerFactory, **kw: Any) -> Any:
    return make_server(
        max_buffer=CAP,
        send_buffer=16 * 1024,
        ping_interval=60,
        recent_items=1,
        max_items=1_300,
        **kw,
    )


async def raw_sse(server: Server, path: str, headers: str = "") -> tuple[Any, Any]:
    """An SSE request on a socket with a 4 KiB receive buffer, read by nobody yet."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.settings.port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: wire\r\n{headers}\r\n".encode())
    return reader, writer


def dechunk(raw: bytes) -> bytes:
    """The body of a chunked HTTP response (as much as has arrived)."""
    _, _, rest = raw.partition(b"\r\n\r\n")
    parts: list[bytes] = []
    while rest:
        size, sep, rest = rest.partition(b"\r\n")
        if not sep:
            break
        n = int(size, 16)
        parts.append(rest[:n])
        rest = rest[n + 2 :]
    return b"".join(parts)


def sse_messages(raw: bytes) -> list[dict[str, Any]]:
    """The events of an SSE response as messages; an item event's ``id:`` must be
    its item's id."""
    msgs: list[dict[str, Any]] = []
    for block in dechunk(raw).split(b"\n\n")[:-1]:  # the last may be partial
        event_id = re.search(rb"(?m)^id: (\S+)$", block)
        event = re.search(rb"(?m)^event: (\S+)$", block)
        data = re.search(rb"(?m)^data: (.+)$", block)
        if data is None or event is None:
            continue
        msg = orjson.loads(data[1])
        if event[1] == b"item":  # an item event's data is the item itself
            msg = {"type": "item", "item": msg}
            assert event_id is not None and event_id[1].decode() == msg["item"]["id"]
        else:
            assert event_id is None and msg["type"] == event[1].decode()
        msgs.append(msg)
    return msgs


async def test_an_sse_catch_up_from_last_event_id_overtaken_by_retention_is_told_in_place(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    """``Last-Event-ID`` on SSE, read slowly while retention trims past the read: an
    ``event: error`` ``history_truncated`` in place, ids strictly increasing."""
    server = await retention_server(make_server)
    hub = server.app[HUB]
    history = await old_history(server, http)
    reader, writer = await raw_sse(server, "/v1/sse?tags=news", "Last-Event-ID: 0\r\n")
    try:
        await replaying_conn(hub.conns)
        await wait_for(lambda: any(c.last_key != ZERO for c in hub.conns), "a page in hand")
        live = await fill_and_stall_then_trim(server, http)
        raw, msgs = b"", list[dict[str, Any]]()
        async with asyncio.timeout(20):
            while True:
                chunk = await reader.read(1 << 20)
                assert chunk, f"the response ended: {raw[-300:]!r}"
                raw += chunk
                # Parsed only once the last item's id line is in: a parse per read is slow.
                if f"id: {live[-1]}".encode() in raw[-len(chunk) - 64 :] or msgs:
                    msgs = sse_messages(raw)
                    if items_of(msgs)[-1:] == live[-1:]:
                        break
    finally:
        writer.close()
    gaps = check_gaps(msgs, history)
    assert any(i > 1 for i, _, _ in gaps), "told in the middle, where the read found it"
    assert items_of(msgs)[-3:] == live


async def test_a_compact_catch_up_overtaken_by_retention_is_told_in_place(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    """``compact`` reads its range twice: the first pass whole, the second slowly.
    Stories with two versions each (the second in the second half); retention
    trims while the second pass is stalled: told in place, only newest versions."""
    server = await retention_server(make_server)
    hub = server.app[HUB]
    first: list[str] = []
    second: list[str] = []
    for half, out in ((1, first), (2, second)):
        for part in range(2):
            body = [
                item(f"Story {part} {i} v{half}", ["news"], guid=f"s-{part}-{i}", body="x" * BODY)
                for i in range(300)
            ]
            status, answer = await post(http, server.base, body)
            assert status == 200, answer
            out += [r["item"]["id"] for r in answer["results"]]
    await wait_for(functools.partial(dispatched, hub, parse_id(second[-1])), "the history")
    ws = await stalled_ws(server.ws, server.settings.port, "?tags=news&since=0&compact=1")
    try:
        await replaying_conn(hub.conns)
        live = await fill_and_stall_then_trim(server, http)
        msgs = await read_through(ws, live[-1])
    finally:
        await ws.close()
    ids = items_of(msgs)
    assert not set(ids) & set(first), "only each story's newest version"
    gaps = check_gaps(msgs, second)
    assert gaps and any(i > 1 for i, _, _ in gaps), "told in the middle, where the read found it"
    assert ids[-3:] == live


async def test_a_held_window_read_again_after_retention_passed_it_is_told(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    """Live news held during a stalled catch-up overflows (dropped: owed from the
    stream); retention then trims past that window before it is read again. The
    client is told ``history_truncated`` for it, in place, and loses nothing else."""
    server = await make_server(
        max_buffer=CAP, send_buffer=16 * 1024, ping_interval=60, recent_items=1, max_items=600
    )
    hub = server.app[HUB]
    async with stalled(server, http, "?tags=news&since=0") as (history, ws, conn):
        await stalled_task()
        live = await publish_many(http, server.base, "Live", LIVE)
        await wait_for(functools.partial(dispatched, hub, parse_id(live[-1])), "dispatched")
        assert conn.holding is not None and conn.holding.spills >= 1, "held past the cap"
        for part in range(2):
            await batch_ids(http, server.base, f"Other {part}", 500, "other")
        late = await batch_ids(http, server.base, "Late", 3, "news")
        msgs = await read_through(ws, late[-1])
    gaps = check_gaps(msgs, history + live)
    assert gaps, "retention passed the dropped window: told"
    assert items_of(msgs)[-3:] == late


# --- regression: grants through windows read again ---------------------------------


async def test_a_partners_windows_read_again_after_a_plain_subscribe_stay_in_its_grant(
    make_server: ServerFactory, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """A sport-only partner, stalled in a catch-up, subscribes (no history) to
    ``sport/football`` while live items overflow: items tagged only secret never
    reach it, and a withdrawal of a story that was once secret shows only sport."""
    server = await partner_server(make_server, tmp_path)
    hub = server.app[HUB]
    async with stalled_partner(server, http) as (history, ws, conn):
        task = await stalled_task()
        _, v1 = await post(http, server.base, item("Deal", ["sport"], guid="deal"))
        _, v2 = await post(http, server.base, item("Deal, secretly", ["secret"], guid="deal"))
        secret = await publish_many(http, server.base, "Secret", 20, tag="secret")
        await send(ws, type="subscribe", tags=["sport/football"])
        task = await taken_over(task)
        async with http.post(
            f"{server.base}/v1/stories/deal/withdraw", json={"reason": "Legal"}, headers=AUTH
        ) as resp:
            assert resp.status == 200
            kill = (await resp.json())["item"]
        shared, more = await sport_and_secret(http, server, 4)
        secret += more
        await wait_for(functools.partial(dispatched, hub, parse_id(secret[-1])), "dispatched")
        assert conn.holding is not None and conn.holding.spills >= 1, "held past the cap"
        msgs = await read_through(ws, shared[-1])
    got = {m["item"]["id"]: m["item"] for m in msgs if m["type"] == "item"}
    assert items_of(msgs) == [*history, v1["item"]["id"], kill["id"], *shared]
    assert not set(got) & set([*secret, v2["item"]["id"]]), "items outside the grant"
    assert got[kill["id"]]["tags"] == ["sport"], "the withdrawal's tags narrowed to the grant"


async def test_plain_subscribes_while_nothing_is_held_do_not_restart_the_catch_up(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    """A client that reads nothing sends plain subscribes (each a new tag) while no
    live item of its tags arrives. Each used to take the catch-up over, and each
    takeover read the history still owed from Redis again: a client could have
    Redis read a page of it 20 times a second. With nothing held, the catch-up
    goes on as it was (no page read again), and the new tags' items from after
    their ``subscribed`` arrive after the history."""
    server = await make_server(
        max_buffer=CAP, send_buffer=16 * 1024, ping_interval=60, recent_bytes=1
    )
    async with stalled(server, http, "?tags=news&since=0") as (history, ws, conn):
        task = await stalled_task()
        pages: list[int] = []
        spy_redis_pages(server.app[STORE], pages)
        for n in range(10):
            await send(ws, type="subscribe", tags=[f"extra{n}"])
            await wait_for(functools.partial(subscribed_to, conn, f"extra{n}"), "subscribed")
        assert catch_up_task() is task, "the catch-up was not taken over"
        assert pages == [], f"history read from Redis again: {len(pages)} pages"
        later = await batch_ids(http, server.base, "Later", 3, "extra9")
        msgs = await read_through(ws, later[-1])
    assert items_of(msgs) == history + later, "the history, then the new tag's items"


def subscribed_to(conn: Conn, tag: str) -> bool:
    return tag in conn.keys
