"""A second hostile pass after issue 11: bounded memory with large items.

Items may carry 100,000-character bodies, up to about 400 KB of JSON each.
Every bound the wire had on history reads and catch-ups counted entries,
never bytes, so with such items one reader could make Redis and the wire
hold hundreds of megabytes per request. Real Redis, real HTTP/WebSocket.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.conftest import Server, ServerFactory
from tests.support import get_json, post, publish, wait_for
from wire.core.entry import Entry
from wire.core.ids import ZERO
from wire.core.resume import Kept
from wire.gateway import session as session_module
from wire.gateway.reader import HUB
from wire.storage import store as store_module
from wire.storage.store import ANSWER_BYTES, PAGE_BYTES, Store
from wire.web.appkeys import STORE

#: One item of about 300 KB of JSON (4-byte characters in the body).
BIG_BODY = "\U0001f600" * 75_000
BIG = len(BIG_BODY.encode())
COUNT = 24  # 7 MB: more than one answer's worth


async def publish_big(http: aiohttp.ClientSession, server: Server, n: int = COUNT) -> list[str]:
    """Publish ``n`` big items tagged world; return their ids, oldest first."""
    ids = []
    for i in range(n):
        status, body = await post(
            http, server.base, {"title": f"long read {i}", "tags": ["world"], "body": BIG_BODY}
        )
        assert status == 201, body
        ids.append(body["item"]["id"])
    return ids


async def read_all(http: aiohttp.ClientSession, url: str) -> tuple[list[str], list[int]]:
    """Follow ``next`` cursors from ``url``: every id, and each answer's size."""
    ids: list[str] = []
    sizes: list[int] = []
    cursor = "after" if "after=" in url else "before"
    base, target = url.split("&after=")[0], url
    for _ in range(200):
        async with http.get(target) as resp:
            assert resp.status == 200
            raw = await resp.read()
            body = await resp.json()
        sizes.append(len(raw))
        ids += [i["id"] for i in body["items"]]
        if "next" not in body:
            return ids, sizes
        target = f"{base}&{cursor}={body['next']}"
    raise AssertionError("next cursors never ended")


async def test_history_answer_is_bounded_in_bytes_and_pages_with_next(
    server: Server, http: aiohttp.ClientSession
) -> None:
    """500 items of 400 KB were one 200 MB answer (two at once: gateway RSS 2 GB)."""
    ids = await publish_big(http, server)
    status, body = await get_json(http, f"{server.base}/v1/items?limit=500")
    assert status == 200
    assert 0 < len(body["items"]) < COUNT and "next" in body
    newest_first, sizes = await read_all(http, f"{server.base}/v1/items?limit=500")
    assert newest_first == ids[::-1]  # every item once, none lost at a page edge
    assert max(sizes) <= ANSWER_BYTES + 2 * BIG
    oldest_first, sizes = await read_all(http, f"{server.base}/v1/items?limit=500&after=0-0")
    assert oldest_first == ids
    assert max(sizes) <= ANSWER_BYTES + 2 * BIG


async def test_a_scan_that_matches_nothing_stops_at_its_byte_budget(
    server: Server, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read for a rare tag shipped its whole entry budget from Redis (5,000 x 400 KB):
    four at once made every Redis command time out, the releaser's included."""
    monkeypatch.setattr(store_module, "SCAN_BYTES", 2 * BIG)
    await publish_big(http, server, 8)
    status, body = await get_json(http, f"{server.base}/v1/items?tags=sport&limit=1")
    assert status == 200 and body["items"] == [] and "next" in body
    ids, _ = await read_all(http, f"{server.base}/v1/items?tags=sport&limit=1")
    assert ids == []


async def test_history_pages_from_redis_are_bounded_in_bytes(
    server: Server, http: aiohttp.ClientSession
) -> None:
    """Each Redis read of a history scan (and of a resume) was 1,000 entries, 400 MB."""
    ids = await publish_big(http, server)
    store: Store = server.app[STORE]
    seen: list[str] = []
    async for page in store.pages_after(ZERO, None, frozenset({"*"})):
        assert sum(len(e.json) for e in page) <= PAGE_BYTES + BIG
        seen += [e.id for e in page]
    assert seen == ids
    scan = await store.history_before(frozenset({"*"}), 500)
    assert sum(len(e.json) for e in scan.entries) <= ANSWER_BYTES + BIG


# -- the gateway's catch-ups ---------------------------------------------------------------


def spy_redis_pages(store: Store, pages: list[int]) -> None:
    """Record the bytes of every page of history the store reads from Redis, with
    ``range_after`` (bounded by count only) or the byte-bounded reader."""
    original_range, original_page = store.range_after, store._page

    async def range_after(*args: Any, **kwargs: Any) -> list[Entry]:
        page = await original_range(*args, **kwargs)
        pages.append(sum(len(e.json) for e in page))
        return page

    async def page(*args: Any, **kwargs: Any) -> tuple[list[Entry], bool, Kept]:
        found, more, kept = await original_page(*args, **kwargs)
        pages.append(sum(len(e.json) for e in found))
        return found, more, kept

    store.range_after = range_after  # type: ignore[method-assign]
    store._page = page  # type: ignore[method-assign]


async def ws_items(server: Server, query: str, want: int) -> list[str]:
    """Catch up over a WebSocket; the ids received (stops at ``want``)."""
    got: list[str] = []
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"{server.ws}?{query}", max_msg_size=0) as ws,
    ):
        async for msg in ws:
            assert msg.type == aiohttp.WSMsgType.TEXT, (msg.type, ws.close_code)
            data = msg.json()
            if data["type"] == "item":
                got.append(data["item"]["id"])
                if len(got) == want:
                    break
    return got


async def test_compact_catch_up_reads_redis_in_bounded_pages(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    """The compact first pass read 1,000 entries (400 MB) per Redis read: 1013 after 5 s."""
    # recent_bytes=1: the hub's window never covers the range, so it comes from Redis.
    server = await make_server(recent_bytes=1)
    ids = await publish_big(http, server)
    pages: list[int] = []
    spy_redis_pages(server.app[STORE], pages)
    got = await ws_items(server, "tags=world&since=0&compact=1", COUNT)
    assert got == ids
    assert pages and max(pages) <= PAGE_BYTES + BIG


async def test_catch_up_writes_stay_under_the_slow_consumer_cap(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    """A catch-up batch was 100 entries (a 30 MB write): a keep-alive ping queued
    behind it found the buffer over WIRE_MAX_BUFFER, and a reading client got 4008."""
    server = await make_server(recent_bytes=1)
    await publish_big(http, server)
    the_hub = server.app[HUB]
    writes: list[int] = []
    original = the_hub.write

    def write(conn: Any, entries: Any) -> None:
        writes.append(sum(len(e.json) for e in entries))
        original(conn, entries)

    the_hub.write = write  # type: ignore[method-assign]
    got = await ws_items(server, "tags=world&since=0", COUNT)
    assert len(got) == COUNT
    assert max(writes) <= server.settings.max_buffer


# -- catch-ups per process --------------------------------------------------------------------


async def test_catch_ups_reading_redis_take_turns_and_all_complete(
    make_server: ServerFactory, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each catch-up from Redis holds a page and a batch in flight: at most
    ``max_catchups`` at once per process; the others wait, then complete."""
    server = await make_server(recent_bytes=1, max_catchups=2)
    ids = [(await publish(http, server.base, f"n{i}", ["world"]))["id"] for i in range(30)]
    store: Store = server.app[STORE]
    active, most = 0, 0
    original = store.pages_after

    async def pages_after(*args: Any, **kwargs: Any) -> AsyncIterator[list[Entry]]:
        nonlocal active, most
        active += 1
        most = max(most, active)
        try:
            async for page in original(*args, **kwargs):
                yield page
        finally:
            active -= 1

    monkeypatch.setattr(store, "pages_after", pages_after)
    got = await asyncio.gather(*(ws_items(server, "tags=world&since=0", 30) for _ in range(40)))
    assert all(g == ids for g in got)  # every one complete, each item once and in order
    assert 1 <= most <= 2
    assert server.app[HUB].catchups._value == 2  # every turn given back


async def test_an_sse_catch_up_nobody_reads_gives_its_turn_back(
    make_server: ServerFactory, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``Last-Event-ID: 0-0`` and never a read: once its socket takes nothing for a
    ping interval the connection is a slow consumer, and its turn at Redis (and the
    page it held) goes to the next catch-up."""
    monkeypatch.setattr(session_module, "MIN_STALL", 0.5)
    server = await make_server(recent_bytes=1, max_catchups=1, ping_interval=1.0)
    ids = await publish_big(http, server)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", server.settings.port))
    request = b"GET /v1/sse?tags=world HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 0-0\r\n\r\n"
    await loop.sock_sendall(sock, request)
    the_hub = server.app[HUB]
    try:
        await wait_for(lambda: the_hub.catchups.locked(), "the SSE catch-up to take the turn")
        # Waits for the turn, then gets everything.
        assert await ws_items(server, "tags=world&since=0", COUNT) == ids
        assert the_hub.slow_closes >= 1
    finally:
        sock.close()
