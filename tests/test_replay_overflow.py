"""A resuming client whose held live items overflow its cap, over real sockets and Redis.

While a catch-up is sent, live items are held for the connection
(:mod:`wire.gateway.holding`). A client that reads its catch-up slowly while
the wire is busy used to be closed 4008 once they passed ``WIRE_MAX_BUFFER``;
now what was held is dropped, read again from the stream, and the client gets
every item once and in order, on the same connection. A client that never
reads must not make the gateway hold more than its cap for it, whatever it
sends; one that unsubscribes during an overflowed catch-up gets nothing of
that tag after the ``subscribed`` saying so; a partner's dropped window read
again shows nothing outside its grant.
"""

from __future__ import annotations

import asyncio
import functools
import re
import socket
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from websockets.exceptions import ConnectionClosed

from tests.conftest import Server, ServerFactory
from tests.support import batch_ids, item, post, replaying_conn, stalled_ws, wait_for
from wire.core.ids import ZERO, StreamKey, format_id, parse_id
from wire.core.resume import Latest, Since
from wire.gateway.conn import Conn
from wire.gateway.holding import MAX_SPILLS
from wire.gateway.hub import Hub
from wire.gateway.reader import HUB
from wire.gateway.session import Session

CAP = 64 * 1024
BODY = 2_000
HISTORY = 150
#: About 2.5 times the cap of live items while the catch-up is stalled.
LIVE = 80


async def publish_many(
    http: aiohttp.ClientSession, base: str, prefix: str, n: int, tag: str = "news"
) -> list[str]:
    """``n`` items of ``BODY`` bytes on ``tag``, as one batch: their ids."""
    return await batch_ids(http, base, prefix, n, tag, BODY)


async def stall(
    server: Server, http: aiohttp.ClientSession, query: str, tag: str = "news", **kw: Any
) -> tuple[list[str], Any, Conn]:
    """History on ``tag`` published and dispatched, then a client that reads nothing
    yet catching up on it: the history's ids, the client, its connection."""
    hub = server.app[HUB]
    history = await publish_many(http, server.base, "Before", HISTORY, tag=tag)
    await wait_for(lambda: hub.position >= parse_id(history[-1]), "the history dispatched")
    ws = await stalled_ws(server.ws, server.settings.port, query, **kw)
    return history, ws, await replaying_conn(hub.conns)


@asynccontextmanager
async def stalled(
    server: Server, http: aiohttp.ClientSession, query: str, tag: str = "news", **kw: Any
) -> AsyncIterator[tuple[list[str], Any, Conn]]:
    """:func:`stall`, the client closed at the end; a close by the server fails the test."""
    history, ws, conn = await stall(server, http, query, tag, **kw)
    try:
        yield history, ws, conn
    except ConnectionClosed as closed:
        raise AssertionError(f"the connection was closed: {closed.rcvd}") from None
    finally:
        await ws.close()


async def read_items(ws: Any, count: int) -> list[str]:
    ids: list[str] = []
    while len(ids) < count:
        msg = orjson.loads(await asyncio.wait_for(ws.recv(), 20))
        if msg["type"] == "item":
            ids.append(msg["item"]["id"])
    return ids


async def test_held_items_past_the_cap_come_from_the_stream_not_a_4008(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    server = await make_server(max_buffer=CAP, send_buffer=16 * 1024, ping_interval=60)
    hub = server.app[HUB]
    # A client that reads nothing yet: its catch-up stalls after a few pages.
    async with stalled(server, http, "?tags=news&since=0") as (history, ws, conn):
        live = await publish_many(http, server.base, "Live", LIVE)
        await wait_for(lambda: hub.position >= parse_id(live[-1]), "the live items dispatched")
        holding = conn.holding
        assert holding is not None and 1 <= holding.spills <= MAX_SPILLS, "held past the cap"
        assert not conn.closed
        got = await read_items(ws, HISTORY + LIVE)
        assert got == history + live, "every item once, in order, on one connection"
        more = await publish_many(http, server.base, "After", 3)
        assert await read_items(ws, 3) == more, "live again"
        assert conn.holding is None and not conn.closed


async def test_a_subscribe_taking_over_an_overflowed_catch_up_loses_nothing(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    """A new subscribe with ``since`` while held items were dropped: the dropped
    window is owed to the new catch-up, for the tags it was held for."""
    server = await make_server(max_buffer=CAP, send_buffer=16 * 1024, ping_interval=60)
    hub = server.app[HUB]
    async with stalled(server, http, "?tags=news&since=0") as (history, ws, conn):
        # After the news history, before the live news: not held for this client.
        sport = await batch_ids(http, server.base, "Sport", 5, "sport")
        live = await publish_many(http, server.base, "Live", LIVE)
        await wait_for(lambda: hub.position >= parse_id(live[-1]), "the live items dispatched")
        assert conn.holding is not None and conn.holding.spills >= 1
        await ws.send(orjson.dumps({"type": "subscribe", "tags": ["sport"], "since": "0"}).decode())
        # The catch-up stalled inside the news history: every sport item is
        # after what it had sent, so the new subscribe's history has them all.
        got = await read_items(ws, HISTORY + LIVE + len(sport))
        assert got == sorted(history + sport + live, key=parse_id), "once each, in order"
        more = await publish_many(http, server.base, "After", 2)
        assert await read_items(ws, 2) == more, "live again"


# --- retention overtaking a slow catch-up ----------------------------------------

TRUNCATED = re.compile(r"items after (\S+) up to (\S+) are no longer kept")


async def read_through(ws: Any, last: str) -> list[dict[str, Any]]:
    """Every message up to the item ``last``."""
    msgs: list[dict[str, Any]] = []
    while not (msgs and msgs[-1]["type"] == "item" and msgs[-1]["item"]["id"] == last):
        msgs.append(orjson.loads(await asyncio.wait_for(ws.recv(), 20)))
    return msgs


async def overtake(
    http: aiohttp.ClientSession, server: Server, ws: Any
) -> tuple[list[str], list[dict[str, Any]]]:
    """Push the stream past its limit (``max_items`` 1,300) with 1,100 items on another
    tag (nothing is held for the client), then 3 live news items: their ids, and
    every message the client reads up to the last of them."""
    for part in range(2):
        await batch_ids(http, server.base, f"Other {part}", 550, "other")
    live = await batch_ids(http, server.base, "Live", 3, "news")
    return live, await read_through(ws, live[-1])


def told_gaps(msgs: list[dict[str, Any]]) -> list[tuple[int, StreamKey, StreamKey]]:
    """(index, after, upto) of each ``history_truncated`` among ``msgs``."""
    gaps = []
    for i, m in enumerate(msgs):
        if m["type"] == "error" and m["code"] == "history_truncated":
            found = TRUNCATED.search(m["message"])
            assert found, m
            gaps.append((i, parse_id(found[1]), parse_id(found[2])))
    return gaps


async def test_a_catch_up_overtaken_by_retention_is_told_where_and_loses_nothing_else(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    """A client reads its history slowly while the stream is at its length limit:
    retention removes items after the page the catch-up has in hand, before it
    reads them. They used to be skipped without a word; now the client is told
    ``history_truncated`` for that range, in place (after every item before it,
    before every item after it), and gets every item still kept, once, in order."""
    server = await make_server(
        max_buffer=CAP, send_buffer=16 * 1024, ping_interval=60, recent_items=1, max_items=1_300
    )
    hub = server.app[HUB]
    history: list[str] = []
    for part in range(3):  # about 2.5 MB: pages of 1 MB from Redis (none from memory)
        history += await batch_ids(http, server.base, f"Old {part}", 400, "news", BODY)
    await wait_for(functools.partial(dispatched, hub, parse_id(history[-1])), "the history")
    ws = await stalled_ws(server.ws, server.settings.port, "?tags=news&since=0")
    try:
        conn = await replaying_conn(hub.conns)
        await wait_for(lambda: conn.last_key != ZERO, "the first page of history in hand")
        live, msgs = await overtake(http, server, ws)
    finally:
        await ws.close()
    ids = [m["item"]["id"] for m in msgs if m["type"] == "item"]
    assert ids == sorted(set(ids), key=parse_id), "once each, in order"
    missing = [h for h in history if h not in set(ids)]
    assert missing, "retention removed history the catch-up had not read yet"
    gaps = told_gaps(msgs)
    assert gaps, "history_truncated told"
    for h in missing:
        assert any(a < parse_id(h) <= u for _, a, u in gaps), f"{h} missing without a word"
    for i, after, upto in gaps:
        before = [parse_id(m["item"]["id"]) for m in msgs[:i] if m["type"] == "item"]
        later = [parse_id(m["item"]["id"]) for m in msgs[i:] if m["type"] == "item"]
        assert max(before, default=ZERO) <= after, "told after every item before the gap"
        assert min(later) > upto, "and before every item after it"
    assert any(i > 1 for i, _, _ in gaps), "told in the middle, where the read found it"
    assert ids[-len(live) :] == live, "live again"


# --- hostile: a client that never reads, unsubscribes, grants ---------------------


def dispatched(hub: Hub, key: StreamKey) -> bool:
    return hub.position >= key


def catch_up_session() -> Session | None:
    """The session whose catch-up task is running (the test has one connection);
    None between a catch-up taken over and the one taking over."""
    tasks = [t for t in asyncio.all_tasks() if t.get_name() == "wire-catch-up" and not t.done()]
    if len(tasks) != 1:
        return None
    frame = tasks[0].get_coro().cr_frame  # type: ignore[union-attr]
    session = frame.f_locals["self"]
    assert isinstance(session, Session)
    return session


def taking_over() -> Session | None:
    """The running catch-up's session once it owes something, else None."""
    session = catch_up_session()
    return session if session is not None and session.owed else None


def held_bytes(conn: Conn, session: Session) -> int:
    """Bytes of live item JSON the gateway keeps for one replaying connection:
    what it holds; what a catch-up owes is windows of the stream, not items."""
    assert conn.holding is not None
    assert all(isinstance(s, Since | Latest) for s in session.owed)
    return conn.holding.size


async def read_until(ws: Any, count: int, types: set[str] | None = None) -> list[dict[str, Any]]:
    """The next messages up to ``count`` items (other messages kept too)."""
    got: list[dict[str, Any]] = []
    items = 0
    while items < count:
        msg = orjson.loads(await asyncio.wait_for(ws.recv(), 20))
        if types is None or msg["type"] in types:
            got.append(msg)
        items += msg["type"] == "item"
    return got


async def test_subscribes_while_stalled_never_hold_more_than_the_cap(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    """A client that reads nothing but sends a subscribe (with ``since`` = now) every
    so often: each takeover used to hand what was held to the new catch-up and
    start counting from zero, so the gateway kept every live item for it, past
    any cap, with no 4008 and no drop. Then it reads: everything once, in order."""
    server = await make_server(max_buffer=CAP, send_buffer=16 * 1024, ping_interval=60)
    hub = server.app[HUB]
    async with stalled(server, http, "?tags=news&since=0") as (history, ws, conn):
        live: list[str] = []
        most = 0
        for round_ in range(6):
            # Under the cap each time: nothing overflows between two subscribes.
            live += await publish_many(http, server.base, f"Live {round_}", 20)
            last = parse_id(live[-1])
            await wait_for(functools.partial(dispatched, hub, last), "the items dispatched")
            again = {"type": "subscribe", "tags": ["news"], "since": format_id(hub.position)}
            await ws.send(orjson.dumps(again).decode())
            await wait_for(taking_over, "the new catch-up to start")
            session = taking_over()
            assert session is not None
            most = max(most, held_bytes(conn, session))
        assert not conn.closed
        assert most <= CAP, f"{most} bytes held for a connection capped at {CAP}"
        msgs = await read_until(ws, HISTORY + len(live), {"item"})
        assert [m["item"]["id"] for m in msgs] == history + live, "once each, in order"


async def test_an_unsubscribed_tag_sends_nothing_after_its_subscribed_reply(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    """An overflowed catch-up on news+sport; the client unsubscribes sport while
    stalled: after the ``subscribed`` without sport, no sport item arrives, from
    history, from the dropped window read again, or from what is held."""
    server = await make_server(max_buffer=CAP, send_buffer=16 * 1024, ping_interval=60)
    hub = server.app[HUB]
    async with stalled(server, http, "?tags=news,sport&since=0") as (history, ws, conn):
        news, sport = [], []
        for n in range(4):
            news += await publish_many(http, server.base, f"N{n}", 15)
            sport += await publish_many(http, server.base, f"S{n}", 15, tag="sport")
        await wait_for(lambda: hub.position >= parse_id(sport[-1]), "the live items dispatched")
        assert conn.holding is not None and conn.holding.spills >= 1, "held past the cap"
        await ws.send(orjson.dumps({"type": "unsubscribe", "tags": ["sport"]}).decode())
        await wait_for(lambda: "sport" not in conn.keys, "the unsubscribe applied")
        after = await publish_many(http, server.base, "Late sport", 5, tag="sport")
        late = await publish_many(http, server.base, "Late news", 5)
        msgs = await read_until(ws, HISTORY + 1, {"item", "subscribed"})
        while not any(m["type"] == "item" and m["item"]["id"] == late[-1] for m in msgs):
            msgs += await read_until(ws, 1, {"item", "subscribed"})
        cut = next(
            i for i, m in enumerate(msgs) if m["type"] == "subscribed" and m["tags"] == ["news"]
        )
        later = [m["item"]["id"] for m in msgs[cut:] if m["type"] == "item"]
        assert not set(later) & set(sport + after), "sport items after unsubscribing it"
        ids = [m["item"]["id"] for m in msgs if m["type"] == "item"]
        assert ids == sorted(set(ids), key=parse_id), "once each, in order"
        assert [i for i in ids if i in set(history + news + late)] == history + news + late


@pytest.mark.parametrize("overflow", ["before", "after"])
async def test_a_plain_subscribe_during_a_catch_up_gets_none_of_its_tags_earlier_items(
    make_server: ServerFactory, http: aiohttp.ClientSession, overflow: str
) -> None:
    """A stalled catch-up on news; sport items published; the client subscribes to
    sport (no history) while the held news overflows, before or after that
    subscribe. The dropped window is read again for news only: of sport, only
    the items after its ``subscribed`` arrive (it used to be read again for
    news and sport, which sent the earlier sport items too)."""
    server = await make_server(max_buffer=CAP, send_buffer=16 * 1024, ping_interval=60)
    hub = server.app[HUB]
    async with stalled(server, http, "?tags=news&since=0") as (history, ws, conn):
        early = await batch_ids(http, server.base, "Early sport", 5, "sport")
        # Dispatched before the subscribe: else they would come after it, and
        # rightly go out with the sport subscription.
        await wait_for(lambda: hub.position >= parse_id(early[-1]), "the early items dispatched")
        live: list[str] = []
        if overflow == "before":
            live = await publish_many(http, server.base, "Live", LIVE)
            await wait_for(lambda: hub.position >= parse_id(live[-1]), "the live items dispatched")
            assert conn.holding is not None and conn.holding.spills >= 1, "held past the cap"
        await ws.send(orjson.dumps({"type": "subscribe", "tags": ["sport"]}).decode())
        await wait_for(lambda: "sport" in conn.keys, "the subscribe applied")
        if overflow == "after":
            live = await publish_many(http, server.base, "Live", LIVE)
            await wait_for(lambda: hub.position >= parse_id(live[-1]), "the live items dispatched")
            assert conn.holding is not None and conn.holding.spills >= 1, "held past the cap"
        later = await batch_ids(http, server.base, "Later sport", 3, "sport")
        msgs = await read_until(ws, HISTORY + LIVE + len(later), {"item", "subscribed"})
        ids = [m["item"]["id"] for m in msgs if m["type"] == "item"]
        assert not set(ids) & set(early), "sport items from before its subscribed"
        assert ids == history + live + later, "the rest once each, in order"
        cut = next(
            i for i, m in enumerate(msgs) if m["type"] == "subscribed" and "sport" in m["tags"]
        )
        assert not {m["item"]["id"] for m in msgs[:cut] if m["type"] == "item"} & set(later)
        assert not conn.closed


async def partner_server(make_server: ServerFactory, tmp_path: Path) -> Server:
    """A gateway (small buffers) where the token ``partner`` is granted sport only."""
    grants = tmp_path / "entitlements.toml"
    grants.write_text('[[token]]\ntoken = "partner"\nname = "Partner"\ntags = ["sport"]\n')
    return await make_server(
        max_buffer=CAP,
        send_buffer=16 * 1024,
        ping_interval=60,
        entitlements=grants,
        subscriber_tokens=("staff",),
    )


def stalled_partner(
    server: Server, http: aiohttp.ClientSession
) -> AbstractAsyncContextManager[tuple[list[str], Any, Conn]]:
    """:func:`stalled`: the sport-only partner catching up on sport."""
    return stalled(
        server,
        http,
        "?tags=sport&since=0",
        tag="sport",
        additional_headers={"Authorization": "Bearer partner"},
    )


async def sport_and_secret(
    http: aiohttp.ClientSession, server: Server, rounds: int
) -> tuple[list[str], list[str]]:
    """Per round, 20 items tagged sport and secret, then 20 tagged secret only: the
    ids of each kind."""
    shared: list[str] = []
    secret: list[str] = []
    for n in range(rounds):
        body = [item(f"Both {n} {i}", ["sport", "secret"], body="x" * BODY) for i in range(20)]
        status, answer = await post(http, server.base, body)
        assert status == 200, answer
        shared += [r["item"]["id"] for r in answer["results"]]
        secret += await publish_many(http, server.base, f"Secret {n}", 20, tag="secret")
    return shared, secret


async def test_a_partners_dropped_window_shows_nothing_outside_its_grant(
    make_server: ServerFactory, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """A sport-only partner whose held items overflowed: the dropped window is read
    again from the stream, where every item is; items tagged sport and secret
    reach it, items tagged only secret never do."""
    server = await partner_server(make_server, tmp_path)
    hub = server.app[HUB]
    async with stalled_partner(server, http) as (history, ws, conn):
        shared, secret = await sport_and_secret(http, server, 4)
        await wait_for(lambda: hub.position >= parse_id(secret[-1]), "the live items dispatched")
        assert conn.holding is not None and conn.holding.spills >= 1, "held past the cap"
        msgs = await read_until(ws, HISTORY + len(shared), {"item"})
        ids = [m["item"]["id"] for m in msgs]
        assert ids == history + shared, "the grant's items once each, in order; no others"


async def test_an_sse_catch_up_that_overflows_sends_each_id_once_increasing(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    """The same overflow on SSE, whose ``id:`` lines a browser resumes from: every
    item once, ids strictly increasing, on the one response."""
    server = await make_server(max_buffer=CAP, send_buffer=16 * 1024, ping_interval=60)
    hub = server.app[HUB]
    history = await publish_many(http, server.base, "Before", HISTORY)
    await wait_for(lambda: hub.position >= parse_id(history[-1]), "the history dispatched")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.settings.port))
    # A small limit: the stream reader stops reading the socket, as a stalled client.
    reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
    writer.write(b"GET /v1/sse?tags=news&since=0 HTTP/1.1\r\nHost: wire\r\n\r\n")
    try:
        conn = await replaying_conn(hub.conns)
        live = await publish_many(http, server.base, "Live", LIVE)
        await wait_for(lambda: hub.position >= parse_id(live[-1]), "the live items dispatched")
        assert conn.holding is not None and conn.holding.spills >= 1, "held past the cap"
        raw = b""
        async with asyncio.timeout(20):
            while raw.count(b"\nid: ") + raw.startswith(b"id: ") < HISTORY + LIVE:
                chunk = await reader.read(65536)
                assert chunk, f"the response ended: {raw[-300:]!r}"
                raw += chunk
        ids = [m.decode() for m in re.findall(rb"(?m)^id: (\S+)$", raw)]
        assert ids == history + live, "each id once, increasing, none missing"
        assert not conn.closed
    finally:
        writer.close()
