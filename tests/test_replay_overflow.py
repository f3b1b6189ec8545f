"""A resuming client whose held live items overflow its cap, over real sockets and Redis.

While a catch-up is sent, live items are held for the connection
(:mod:`wire.gateway.holding`). A client that reads its catch-up slowly while
the wire is busy used to be closed 4008 once they passed ``WIRE_MAX_BUFFER``;
now what was held is dropped, read again from the stream, and the client gets
every item once and in order, on the same connection.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import aiohttp
import orjson
import websockets
from websockets.exceptions import ConnectionClosed

from tests.conftest import ServerFactory
from tests.support import item, post, wait_for
from wire.core.ids import parse_id
from wire.gateway.conn import Conn
from wire.gateway.holding import MAX_SPILLS
from wire.gateway.reader import HUB

CAP = 64 * 1024
BODY = 2_000
HISTORY = 150
#: About 2.5 times the cap of live items while the catch-up is stalled.
LIVE = 80


async def publish_many(http: aiohttp.ClientSession, base: str, prefix: str, n: int) -> list[str]:
    """``n`` items of ``BODY`` bytes on ``news``, as one batch: their ids."""
    body = [item(f"{prefix} {i}", ["news"], body="x" * BODY) for i in range(n)]
    status, answer = await post(http, base, body)
    assert status == 200, answer
    return [r["item"]["id"] for r in answer["results"]]


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
    history = await publish_many(http, server.base, "Before", HISTORY)
    await wait_for(lambda: hub.position >= parse_id(history[-1]), "the history dispatched")
    # A client that reads nothing yet: its catch-up stalls after a few pages.
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.settings.port))
    ws = await websockets.connect(
        server.ws + "?tags=news&since=0", sock=sock, max_queue=1, ping_interval=None
    )
    try:

        def replaying() -> list[Conn]:
            return [c for c in hub.conns if c.holding is not None]

        await wait_for(replaying, "the catch-up to start")
        [conn] = replaying()
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
    except ConnectionClosed as closed:
        raise AssertionError(f"the connection was closed: {closed.rcvd}") from None
    finally:
        await ws.close()


async def test_a_subscribe_taking_over_an_overflowed_catch_up_loses_nothing(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    """A new subscribe with ``since`` while held items were dropped: the dropped
    window is owed to the new catch-up, for the tags it was held for."""
    server = await make_server(max_buffer=CAP, send_buffer=16 * 1024, ping_interval=60)
    hub = server.app[HUB]
    history = await publish_many(http, server.base, "Before", HISTORY)
    status, answer = await post(
        http, server.base, [item(f"Sport {i}", ["sport"]) for i in range(5)]
    )
    assert status == 200, answer
    sport = [r["item"]["id"] for r in answer["results"]]
    await wait_for(lambda: hub.position >= parse_id(sport[-1]), "the history dispatched")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.settings.port))
    ws = await websockets.connect(
        server.ws + "?tags=news&since=0", sock=sock, max_queue=1, ping_interval=None
    )
    try:
        await wait_for(lambda: any(c.holding for c in hub.conns), "the catch-up to start")
        [conn] = [c for c in hub.conns if c.holding is not None]
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
    except ConnectionClosed as closed:
        raise AssertionError(f"the connection was closed: {closed.rcvd}") from None
    finally:
        await ws.close()
