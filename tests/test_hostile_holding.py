"""Hostile tests of holding live items during a catch-up (wire.gateway.holding),
over real sockets and a real Redis.

A client that never reads must not make the gateway hold more than its cap
for it, whatever it sends; a client that unsubscribes during an overflowed
catch-up gets nothing of that tag after the ``subscribed`` saying so; a
partner's dropped window read again shows nothing outside its grant.
"""

from __future__ import annotations

import asyncio
import functools
import socket
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import websockets
from websockets.exceptions import ConnectionClosed

from tests.conftest import Server, ServerFactory
from tests.support import item, post, wait_for
from wire.core.ids import StreamKey, format_id, parse_id
from wire.core.resume import Latest, Since
from wire.gateway.conn import Conn
from wire.gateway.hub import Hub
from wire.gateway.reader import HUB
from wire.gateway.session import Session

CAP = 64 * 1024
BODY = 2_000
HISTORY = 150


async def publish_many(
    http: aiohttp.ClientSession, base: str, prefix: str, n: int, tag: str = "news"
) -> list[str]:
    """``n`` items of ``BODY`` bytes on ``tag``, as one batch: their ids."""
    body = [item(f"{prefix} {i}", [tag], body="x" * BODY) for i in range(n)]
    status, answer = await post(http, base, body)
    assert status == 200, answer
    return [r["item"]["id"] for r in answer["results"]]


async def stalled(server: Server, query: str, **kw: Any) -> Any:
    """A WebSocket client with a tiny receive buffer that reads nothing yet."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.settings.port))
    return await websockets.connect(
        server.ws + query, sock=sock, max_queue=1, ping_interval=None, **kw
    )


def dispatched(hub: Hub, key: StreamKey) -> bool:
    return hub.position >= key


def replaying(server: Server) -> list[Conn]:
    return [c for c in server.app[HUB].conns if c.holding is not None]


def catch_up_session() -> Session:
    """The session whose catch-up task is running (the test has one connection)."""
    [task] = [t for t in asyncio.all_tasks() if t.get_name() == "wire-catch-up" and not t.done()]
    frame = task.get_coro().cr_frame  # type: ignore[union-attr]
    session = frame.f_locals["self"]
    assert isinstance(session, Session)
    return session


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
    history = await publish_many(http, server.base, "Before", HISTORY)
    await wait_for(lambda: hub.position >= parse_id(history[-1]), "the history dispatched")
    ws = await stalled(server, "?tags=news&since=0")
    try:
        await wait_for(lambda: replaying(server), "the catch-up to start")
        [conn] = replaying(server)
        live: list[str] = []
        most = 0
        for round_ in range(6):
            # Under the cap each time: nothing overflows between two subscribes.
            live += await publish_many(http, server.base, f"Live {round_}", 20)
            last = parse_id(live[-1])
            await wait_for(functools.partial(dispatched, hub, last), "the items dispatched")
            again = {"type": "subscribe", "tags": ["news"], "since": format_id(hub.position)}
            await ws.send(orjson.dumps(again).decode())
            await wait_for(lambda: catch_up_session().owed, "the new catch-up to start")
            most = max(most, held_bytes(conn, catch_up_session()))
        assert not conn.closed
        assert most <= CAP, f"{most} bytes held for a connection capped at {CAP}"
        msgs = await read_until(ws, HISTORY + len(live), {"item"})
        assert [m["item"]["id"] for m in msgs] == history + live, "once each, in order"
    except ConnectionClosed as closed:
        raise AssertionError(f"the connection was closed: {closed.rcvd}") from None
    finally:
        await ws.close()


async def test_an_unsubscribed_tag_sends_nothing_after_its_subscribed_reply(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    """An overflowed catch-up on news+sport; the client unsubscribes sport while
    stalled: after the ``subscribed`` without sport, no sport item arrives, from
    history, from the dropped window read again, or from what is held."""
    server = await make_server(max_buffer=CAP, send_buffer=16 * 1024, ping_interval=60)
    hub = server.app[HUB]
    history = await publish_many(http, server.base, "Before", HISTORY)
    await wait_for(lambda: hub.position >= parse_id(history[-1]), "the history dispatched")
    ws = await stalled(server, "?tags=news,sport&since=0")
    try:
        await wait_for(lambda: replaying(server), "the catch-up to start")
        [conn] = replaying(server)
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
    except ConnectionClosed as closed:
        raise AssertionError(f"the connection was closed: {closed.rcvd}") from None
    finally:
        await ws.close()


async def test_a_partners_dropped_window_shows_nothing_outside_its_grant(
    make_server: ServerFactory, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """A sport-only partner whose held items overflowed: the dropped window is read
    again from the stream, where every item is; items tagged sport and secret
    reach it, items tagged only secret never do."""
    grants = tmp_path / "entitlements.toml"
    grants.write_text('[[token]]\ntoken = "partner"\nname = "Partner"\ntags = ["sport"]\n')
    server = await make_server(
        max_buffer=CAP,
        send_buffer=16 * 1024,
        ping_interval=60,
        entitlements=grants,
        subscriber_tokens=("staff",),
    )
    hub = server.app[HUB]
    history = await publish_many(http, server.base, "Before", HISTORY, tag="sport")
    await wait_for(lambda: hub.position >= parse_id(history[-1]), "the history dispatched")
    ws = await stalled(
        server, "?tags=sport&since=0", additional_headers={"Authorization": "Bearer partner"}
    )
    try:
        await wait_for(lambda: replaying(server), "the catch-up to start")
        [conn] = replaying(server)
        shared, secret = [], []
        for n in range(4):
            body = [item(f"Both {n} {i}", ["sport", "secret"], body="x" * BODY) for i in range(20)]
            status, answer = await post(http, server.base, body)
            assert status == 200, answer
            shared += [r["item"]["id"] for r in answer["results"]]
            secret += await publish_many(http, server.base, f"Secret {n}", 20, tag="secret")
        await wait_for(lambda: hub.position >= parse_id(secret[-1]), "the live items dispatched")
        assert conn.holding is not None and conn.holding.spills >= 1, "held past the cap"
        msgs = await read_until(ws, HISTORY + len(shared), {"item"})
        ids = [m["item"]["id"] for m in msgs]
        assert ids == history + shared, "the grant's items once each, in order; no others"
    except ConnectionClosed as closed:
        raise AssertionError(f"the connection was closed: {closed.rcvd}") from None
    finally:
        await ws.close()
