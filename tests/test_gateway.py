"""The gateway through its real interfaces: WebSocket and SSE clients, a real Redis.

Every rule of issue 3 that a subscriber can notice is checked here with the
``websockets`` client library (or a plain socket where a test must misbehave:
never read, never answer pings) against an in-process server on a loopback
port, or against real ``wire`` processes.

Nothing here sleeps and hopes. To prove that an item was *not* delivered, a
test publishes a "fence" item that the client does match, after the one it
must not get: the stream is ordered, so once the fence arrives anything that
was going to arrive has arrived.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.conftest import Server, ServerFactory
from tests.support import (
    RedisServer,
    WireProcess,
    free_port,
    get_json,
    parse_frames,
    post,
    publish,
    sse_events,
    wait_for,
)
from wire.gateway.reader import HUB

WAIT = 15.0  # the most any single expected message may take


# --- helpers --------------------------------------------------------------------


def key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


class Sub:
    """A real WebSocket subscriber; ``seen`` is every message it got, in order."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.seen: list[dict[str, Any]] = []

    async def next(self) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.ws.recv(), WAIT)
        msg: dict[str, Any] = orjson.loads(raw)
        self.seen.append(msg)
        return msg

    async def expect(self, kind: str, **fields: Any) -> dict[str, Any]:
        """The next message, which must be of type ``kind`` with these fields."""
        msg = await self.next()
        assert msg["type"] == kind, msg
        for name, value in fields.items():
            assert msg[name] == value, msg
        return msg

    async def send(self, **message: Any) -> None:
        await self.ws.send(orjson.dumps(message).decode())

    async def items_until(self, title: str) -> list[str]:
        """Ids of the items received up to and including the one titled ``title``."""
        ids = []
        while True:
            msg = await self.expect("item")
            ids.append(msg["item"]["id"])
            if msg["item"]["title"] == title:
                return ids

    async def alive(self) -> None:
        """The connection is open and answering."""
        await self.send(type="ping")
        await self.expect("pong")


@asynccontextmanager
async def subscriber(url: str, **kw: Any) -> AsyncIterator[Sub]:
    async with connect(url, proxy=None, open_timeout=WAIT, **kw) as ws:
        yield Sub(ws)


async def fence(
    http: aiohttp.ClientSession, base: str, tags: list[str], title: str = "fence"
) -> str:
    """Publish a fence item (titled "fence" unless told); return its id."""
    return str((await publish(http, base, tags=tags, title=title))["id"])


async def readyz(http: aiohttp.ClientSession, base: str) -> int:
    async with http.get(base + "/readyz") as resp:
        return resp.status


async def wait_status(http: aiohttp.ClientSession, base: str, status: int) -> None:
    end = time.monotonic() + 30
    while await readyz(http, base) != status:
        assert time.monotonic() < end, f"/readyz never answered {status}"
        await asyncio.sleep(0.05)


def refused(info: pytest.ExceptionInfo[InvalidStatus]) -> tuple[int, dict[str, Any]]:
    """The status and JSON error of a refused WebSocket handshake."""
    response = info.value.response
    body: dict[str, Any] = orjson.loads(response.body or b"{}")
    return response.status_code, body


class RawWS:
    """A WebSocket client on a plain non-blocking socket, to misbehave on purpose."""

    def __init__(self, sock: socket.socket, rest: bytes) -> None:
        self.sock = sock
        self.rest = rest

    @classmethod
    async def open(cls, port: int, path: str, *, rcvbuf: int | None = None) -> RawWS:
        loop = asyncio.get_running_loop()
        sock = socket.socket()
        if rcvbuf is not None:  # before connect, so the advertised window is small too
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        await loop.sock_sendall(sock, request.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = await asyncio.wait_for(loop.sock_recv(sock, 1), WAIT)
            assert chunk, "closed during the handshake"
            head += chunk
        assert head.startswith(b"HTTP/1.1 101"), head
        return cls(sock, b"")

    async def read_to_eof(self) -> bytes:
        """Everything the server sends until it closes the connection."""
        loop = asyncio.get_running_loop()
        data = bytearray(self.rest)
        while True:
            try:
                chunk = await asyncio.wait_for(loop.sock_recv(self.sock, 1 << 16), WAIT)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
        return bytes(data)

    async def send_text(self, text: str) -> None:
        """One masked text frame, as RFC 6455 requires of clients."""
        payload = text.encode()
        mask = os.urandom(4)
        n = len(payload)
        head = bytes((0x81, 0x80 | n)) if n < 126 else struct.pack("!BBH", 0x81, 0x80 | 126, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        await asyncio.get_running_loop().sock_sendall(self.sock, head + mask + masked)

    async def read_until_title(self, title: str) -> list[dict[str, Any]]:
        """Read until an item titled ``title`` arrives; return every message so far."""
        loop = asyncio.get_running_loop()
        data = bytearray(self.rest)
        while True:
            messages = [orjson.loads(p) for op, p in parse_frames(bytes(data)) if op == 1]
            if any(m.get("item", {}).get("title") == title for m in messages):
                return messages
            chunk = await asyncio.wait_for(loop.sock_recv(self.sock, 1 << 16), WAIT)
            assert chunk, "closed before the item arrived"
            data += chunk

    def close(self) -> None:
        self.sock.close()


# --- tag filtering ------------------------------------------------------------------


async def test_tag_filtering_exact_hierarchy_and_wildcard(
    server: Server, http: aiohttp.ClientSession
) -> None:
    urls = {
        "world": server.ws + "?tags=world",
        "europe": server.ws + "?tags=world/europe",
        "all": server.ws + "?tags=*",
        "sport": server.ws + "?tags=sport",
        "worl": server.ws + "?tags=worl",  # a string prefix is not a parent tag
    }
    subs: dict[str, Sub] = {}
    async with (
        subscriber(urls["world"]) as subs["world"],
        subscriber(urls["europe"]) as subs["europe"],
        subscriber(urls["all"]) as subs["all"],
        subscriber(urls["sport"]) as subs["sport"],
        subscriber(urls["worl"]) as subs["worl"],
    ):
        for s in subs.values():
            await s.expect("subscribed")
        france = await publish(http, server.base, tags=["World/Europe/France"])
        asia = await publish(http, server.base, tags=["world/asia"])
        football = await publish(http, server.base, tags=["sport/football"])
        worldwide = await publish(http, server.base, tags=["worldwide"])
        end = await fence(http, server.base, ["world/europe/end", "sport", "worl"])
        got = {name: await s.items_until("fence") for name, s in subs.items()}
    assert got["world"] == [france["id"], asia["id"], end]
    assert got["europe"] == [france["id"], end]
    assert got["all"] == [france["id"], asia["id"], football["id"], worldwide["id"], end]
    assert got["sport"] == [football["id"], end]
    assert got["worl"] == [end]


async def test_item_is_the_stored_item_exactly(server: Server, http: aiohttp.ClientSession) -> None:
    async with subscriber(server.ws + "?tags=world") as s:
        await s.expect("subscribed", tags=["world"])
        body = {"title": "Full", "tags": ["world"], "subtitle": "Sub", "body": "Text\nmore"}
        status, answer = await post(http, server.base, {**body, "url": "https://example.com/a"})
        assert status == 201
        msg = await s.expect("item")
        assert msg == {"type": "item", "item": answer["item"]}
        assert set(msg["item"]) >= {"id", "guid", "version", "published_at", "urgency", "tags"}


async def test_once_per_connection_when_several_tags_match(
    server: Server, http: aiohttp.ClientSession
) -> None:
    tags = "*,world,world/europe,world/europe/france,sport"
    async with subscriber(f"{server.ws}?tags={tags}") as s:
        await s.expect("subscribed", tags=sorted(tags.split(",")))
        one = await publish(http, server.base, tags=["world/europe/france", "world/asia", "sport"])
        end = await fence(http, server.base, ["world"])
        assert await s.items_until("fence") == [one["id"], end]


async def test_subscription_tags_are_normalized(
    server: Server, http: aiohttp.ClientSession
) -> None:
    async with subscriber(server.ws) as s:
        await s.send(type="subscribe", tags=["  World/Europe ", "Business  News"])
        await s.expect("subscribed", tags=["business-news", "world/europe"])
        one = await publish(http, server.base, tags=["world/europe/spain"], title="one")
        two = await publish(http, server.base, tags=["business news"], title="two")
        assert await s.items_until("two") == [one["id"], two["id"]]


async def test_per_connection_order_with_concurrent_publishers(
    server: Server, http: aiohttp.ClientSession
) -> None:
    async with (
        subscriber(server.ws + "?tags=*", max_queue=None) as a,
        subscriber(server.ws + "?tags=world", max_queue=None) as b,
    ):
        await a.expect("subscribed")
        await b.expect("subscribed")

        async def publisher(n: int) -> list[dict[str, Any]]:
            return [
                await publish(
                    http, server.base, tags=["world" if i % 2 else "sport"], title=f"p{n}-{i}"
                )
                for i in range(25)
            ]

        done = await asyncio.gather(*(publisher(n) for n in range(4)))
        end = await fence(http, server.base, ["world"])
        published = sorted((i for batch in done for i in batch), key=lambda i: key(i["id"]))
        everything = [i["id"] for i in published] + [end]
        worldly = [i["id"] for i in published if i["tags"] == ["world"]] + [end]
        assert await a.items_until("fence") == everything
        assert await b.items_until("fence") == worldly


# --- subscribe, unsubscribe, subscribed ----------------------------------------------


async def test_subscribed_precedes_the_items_it_causes(
    server: Server, http: aiohttp.ClientSession
) -> None:
    stop = asyncio.Event()
    ids: list[str] = []

    async def publish_forever() -> None:
        n = 0
        while not stop.is_set():
            tag = "live" if n % 2 else "other"
            ids.append((await publish(http, server.base, tags=[tag]))["id"])
            n += 1

    task = asyncio.create_task(publish_forever())
    try:
        await wait_for(lambda: len(ids) >= 4, "publishing to start")
        async with subscriber(server.ws) as s:
            await s.send(type="subscribe", tags=["live"])
            await s.expect("subscribed", tags=["live"])  # before any item
            await s.expect("item")
            await s.send(type="subscribe", tags=["other"])
            # Items of "live" may still arrive before the answer; none of "other" may.
            while (msg := await s.next())["type"] == "item":
                assert msg["item"]["tags"] == ["live"], msg
            assert msg["type"] == "subscribed" and msg["tags"] == ["live", "other"]
            await s.expect("item")
            assert_positions_are_cursors(s.seen)
        async with subscriber(f"{server.ws}?tags=live&since={ids[0]}") as s:
            await s.expect("subscribed", tags=["live"])  # before the replayed items
            await s.expect("item")
    finally:
        stop.set()
        await task


async def test_unsubscribe(server: Server, http: aiohttp.ClientSession) -> None:
    async with subscriber(server.ws + "?tags=world,sport,business") as s:
        await s.expect("subscribed", tags=["business", "sport", "world"])
        await s.send(type="unsubscribe", tags=["Sport", "never-subscribed"])
        await s.expect("subscribed", tags=["business", "world"])
        await publish(http, server.base, tags=["sport"])
        end = await fence(http, server.base, ["world"])
        assert await s.items_until("fence") == [end]
        await s.send(type="unsubscribe", tags=["world", "business"])
        await s.expect("subscribed", tags=[])
        await publish(http, server.base, tags=["world"])
        await s.send(type="subscribe", tags=["business"])
        await s.expect("subscribed", tags=["business"])
        end = await fence(http, server.base, ["business"])
        assert await s.items_until("fence") == [end]


async def test_ping_pong(server: Server) -> None:
    async with subscriber(server.ws) as s:
        await s.send(type="ping")
        assert await s.next() == {"type": "pong"}


async def test_subscribed_reports_the_position_to_resume_from(
    server: Server, http: aiohttp.ClientSession
) -> None:
    first = await publish(http, server.base, tags=["world"], title="first")
    async with subscriber(server.ws + "?tags=world") as s:
        subscribed = await s.expect("subscribed", tags=["world"])
        assert subscribed["position"] == first["id"]  # live items come after this id
    # gone before any item arrived; a resume from that position misses nothing
    missed = [
        (await publish(http, server.base, tags=["world"], title=f"m{i}"))["id"] for i in range(3)
    ]
    async with subscriber(f"{server.ws}?tags=world&since={subscribed['position']}") as s:
        await s.expect("subscribed", position=missed[-1])
        end = await fence(http, server.base, ["world"])
        assert await s.items_until("fence") == [*missed, end]
        await s.send(type="unsubscribe", tags=["world"])
        await s.expect("subscribed", tags=[], position=end)


# --- resume --------------------------------------------------------------------------


@pytest.mark.parametrize("recent_items", [10_000, 8], ids=["from-memory", "from-redis"])
async def test_since_is_gapless_while_publishing(
    make_server: ServerFactory, http: aiohttp.ClientSession, recent_items: int
) -> None:
    """Clients resume at various points while 300 items are being published."""
    server = await make_server(recent_items=recent_items)
    total = 300
    ids: list[str] = []
    tags: list[list[str]] = []

    async def publisher() -> None:
        for i in range(total):
            t = ["world/europe"] if i % 3 else ["sport"]
            ids.append((await publish(http, server.base, tags=t, title=f"n{i}"))["id"])
            tags.append(t)

    async def resumer(
        since_index: int, connect_at: int, sub_tags: str
    ) -> tuple[int, str, list[str]]:
        await wait_for(lambda: len(ids) > connect_at, f"{connect_at} items")
        since = "0" if since_index < 0 else ids[since_index]
        async with subscriber(f"{server.ws}?tags={sub_tags}&since={since}", max_queue=None) as s:
            await s.expect("subscribed", tags=[sub_tags])
            return since_index, sub_tags, await s.items_until("fence")

    plan = [(-1, 5, "*"), (0, 10, "world"), (20, 30, "*"), (50, 150, "world"), (100, 110, "*")]
    plan += [(150, 151, "sport"), (200, 290, "*"), (280, 281, "world"), (10, 250, "sport")]
    async with subscriber(server.ws + "?tags=*", max_queue=None) as live:
        await live.expect("subscribed")
        writing = asyncio.create_task(publisher())
        # Two groups, so that each result keeps its own type (a flat gather mixes them).
        resumed, end = await asyncio.gather(
            asyncio.gather(*(resumer(*p) for p in plan)),
            writing_then_fence(writing, http, server.base),
        )
        got_live = await live.items_until("fence")
    assert got_live == [*ids, end]
    for since_index, sub_tags, got in resumed:
        wanted = [
            eid
            for eid, t in zip(ids[since_index + 1 :], tags[since_index + 1 :], strict=True)
            if sub_tags == "*" or t[0].startswith(sub_tags)
        ]
        assert got == [*wanted, end], (since_index, sub_tags)


async def writing_then_fence(
    writing: asyncio.Task[None], http: aiohttp.ClientSession, base: str
) -> str:
    await writing
    return await fence(http, base, ["world", "sport"])


async def test_since_never_resends_on_the_same_connection(
    server: Server, http: aiohttp.ClientSession
) -> None:
    async with subscriber(server.ws + "?tags=world") as s:
        await s.expect("subscribed")
        a1 = await publish(http, server.base, tags=["world"], title="a1")
        b1 = await publish(http, server.base, tags=["sport"], title="b1")
        a2 = await publish(http, server.base, tags=["world"], title="a2")
        assert await s.items_until("a2") == [a1["id"], a2["id"]]
        b2 = await publish(http, server.base, tags=["sport"], title="b2")
        # Asking again from the start replays nothing this connection already got.
        await s.send(type="subscribe", tags=["world"], since="0")
        await s.expect("subscribed", tags=["world"])
        end = await fence(http, server.base, ["world"])
        assert await s.items_until("fence") == [end]
        # A new tag with an old since: only what is after the last item sent.
        await s.send(type="subscribe", tags=["sport"], since=a1["id"])
        await s.expect("subscribed", tags=["sport", "world"])
        end = await fence(http, server.base, ["sport"])
        assert await s.items_until("fence") == [end]
        assert b1["id"] not in [m.get("item", {}).get("id") for m in s.seen]
        assert b2["id"] not in [m.get("item", {}).get("id") for m in s.seen]
        ids = [m["item"]["id"] for m in s.seen if m["type"] == "item"]
        assert len(ids) == len(set(ids)) and ids == sorted(ids, key=key)


async def test_since_on_a_live_connection_fills_in_a_new_tag(
    server: Server, http: aiohttp.ClientSession
) -> None:
    async with subscriber(server.ws + "?tags=world") as s:
        await s.expect("subscribed")
        a1 = await publish(http, server.base, tags=["world"], title="a1")
        assert await s.items_until("a1") == [a1["id"]]
        b1 = await publish(http, server.base, tags=["sport"], title="b1")
        b2 = await publish(http, server.base, tags=["sport"], title="b2")
        await s.send(type="subscribe", tags=["sport"], since="0")
        await s.expect("subscribed", tags=["sport", "world"])
        # sport items after the last item sent (a1) come in order, then live
        assert await s.items_until("b2") == [b1["id"], b2["id"]]
        end = await fence(http, server.base, ["sport"])
        assert await s.items_until("fence") == [end]


async def test_since_from_a_lagging_connection_never_resends(
    server: Server, http: aiohttp.ClientSession
) -> None:
    """A client that has fallen behind (its items queued in the hub) asks for a replay."""
    hub = server.app[HUB]
    lagging = await RawWS.open(server.settings.port, "/v1/ws?tags=big", rcvbuf=4096)
    try:
        body = "news " * 3_000
        ids = [
            (await publish(http, server.base, tags=["big"], title=f"n{i}", body=body))["id"]
            for i in range(40)
        ]
        assert any(c.held for c in hub.conns), "the connection never fell behind"
        await lagging.send_text('{"type": "subscribe", "tags": ["other"]}')
        await lagging.send_text('{"type": "subscribe", "tags": ["big"], "since": "0"}')
        end = await fence(http, server.base, ["big"])
        messages = await lagging.read_until_title("fence")
    finally:
        lagging.close()
    got = [m["item"]["id"] for m in messages if m["type"] == "item"]
    assert got == [*ids, end]
    assert [m["type"] for m in messages if m["type"] != "item"] == ["subscribed"] * 3
    assert_positions_are_cursors(messages)


def assert_positions_are_cursors(messages: list[dict[str, Any]]) -> None:
    """Each ``subscribed`` position is after every item before it and before every one after.

    So a client that resumes from the last item it got, or from the position
    of a later ``subscribed``, misses nothing.
    """
    for i, msg in enumerate(messages):
        if msg["type"] == "subscribed":
            position = key(msg["position"])
            before = [key(m["item"]["id"]) for m in messages[:i] if m["type"] == "item"]
            after = [key(m["item"]["id"]) for m in messages[i + 1 :] if m["type"] == "item"]
            assert all(k <= position for k in before), (i, msg)
            assert all(k > position for k in after), (i, msg)


async def test_since_at_or_past_the_end_sends_only_new_items(
    server: Server, http: aiohttp.ClientSession
) -> None:
    last = await publish(http, server.base, tags=["world"])
    for since in (last["id"], "99999999999999-0"):
        async with subscriber(f"{server.ws}?tags=world&since={since}") as s:
            await s.expect("subscribed")
            end = await fence(http, server.base, ["world"])
            assert await s.items_until("fence") == [end]


async def test_since_by_message_with_compact(server: Server, http: aiohttp.ClientSession) -> None:
    first = await publish(http, server.base, tags=["world"], title="v1", guid="story-1")
    other = await publish(http, server.base, tags=["world"], title="o1", guid="story-2")
    latest = await publish(http, server.base, tags=["world"], title="v2", guid="story-1")
    async with subscriber(server.ws) as s:
        await s.send(type="subscribe", tags=["world"], since="0", compact=True)
        await s.expect("subscribed")
        end = await fence(http, server.base, ["world"])
        assert await s.items_until("fence") == [other["id"], latest["id"], end]
    assert first["id"] != latest["id"]


async def test_backfill_oldest_first_from_memory(
    server: Server, http: aiohttp.ClientSession
) -> None:
    items = [
        await publish(http, server.base, tags=["world" if i % 2 else "sport"]) for i in range(10)
    ]
    world = [i["id"] for i in items if i["tags"] == ["world"]]
    async with subscriber(server.ws) as s:
        await s.send(type="subscribe", tags=["world"], backfill=3)
        await s.expect("subscribed", tags=["world"])
        end = await fence(http, server.base, ["world"])
        assert await s.items_until("fence") == [*world[-3:], end]
    async with subscriber(server.ws + "?tags=world,sport&backfill=100") as s:
        await s.expect("subscribed")  # asks for more than there are: gets them all
        end2 = await fence(http, server.base, ["world"], "fence 2")
        assert await s.items_until("fence 2") == [*(i["id"] for i in items), end, end2]


async def test_backfill_from_redis_when_the_gateway_started_later(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    pub = await make_server(gateway=False)
    items = [await publish(http, pub.base, tags=["world" if i % 2 else "sport"]) for i in range(10)]
    gw = await make_server(publisher=False)
    await wait_status(http, gw.base, 200)
    world = [i["id"] for i in items if i["tags"] == ["world"]]
    async with subscriber(gw.ws + "?tags=world&backfill=4") as s:
        await s.expect("subscribed")
        end = await fence(http, pub.base, ["world"])
        assert await s.items_until("fence") == [*world[-4:], end]


async def test_backfill_limit(server: Server) -> None:
    async with subscriber(server.ws) as s:
        await s.send(type="subscribe", tags=["world"], backfill=501)
        err = await s.expect("error", code="invalid_field", field="backfill")
        assert "500" in err["message"]
        await s.alive()


async def test_history_truncated_then_everything_still_kept(
    make_server: ServerFactory, redis_server: RedisServer, http: aiohttp.ClientSession
) -> None:
    server = await make_server(max_items=10)
    ids = [
        (await publish(http, server.base, tags=["world"], title=f"n{i}"))["id"] for i in range(120)
    ]
    with redis_server.client() as r:
        kept = [eid.decode() for eid, _ in r.xrange("wire:items")]
    assert kept == ids[len(ids) - len(kept) :] and len(kept) < 100  # retention trimmed
    async with subscriber(f"{server.ws}?tags=world&since={ids[2]}") as s:
        await s.expect("subscribed")
        err = await s.expect("error", code="history_truncated")
        assert ids[2] in err["message"]
        end = await fence(http, server.base, ["world"])
        assert await s.items_until("fence") == [*kept, end]
    async with subscriber(f"{server.ws}?tags=world&since={ids[-3]}") as s:
        await s.expect("subscribed")  # nothing it has not seen was removed: no error
        end2 = await fence(http, server.base, ["world"], "fence 2")
        assert await s.items_until("fence 2") == [*ids[-2:], end, end2]


# --- bad messages and limits ------------------------------------------------------------


async def test_every_bad_message_is_answered_and_the_connection_stays_open(
    server: Server, http: aiohttp.ClientSession
) -> None:
    async with subscriber(server.ws + "?tags=okay") as s:
        await s.expect("subscribed", tags=["okay"])
        cases: list[tuple[str | bytes, str]] = [
            ("{not json", "invalid_json"),
            ("[1, 2]", "invalid_message"),
            ('{"type": "subscribed", "tags": []}', "invalid_message"),
            ('{"tags": ["a"]}', "invalid_message"),
            ('{"type": "subscribe", "tags": "world"}', "invalid_field"),
            ('{"type": "subscribe", "tags": ["world", 7]}', "invalid_field"),
            ('{"type": "unsubscribe"}', "invalid_field"),
            ('{"type": "subscribe", "tags": ["a"], "since": "yesterday"}', "invalid_field"),
            ('{"type": "subscribe", "tags": ["a"], "backfill": -1}', "invalid_field"),
            (b"\x00\x01binary", "invalid_message"),
        ]
        for frame, code in cases:
            await s.ws.send(frame)
            err = await s.expect("error", code=code)
            assert err["message"]
        await s.alive()


async def test_bad_tag_is_named_and_changes_nothing(
    server: Server, http: aiohttp.ClientSession
) -> None:
    async with subscriber(server.ws + "?tags=okay") as s:
        await s.expect("subscribed", tags=["okay"])
        await s.send(type="subscribe", tags=["good", "bad tag!"])
        err = await s.expect("error", code="invalid_tag", field="tags")
        assert "'bad tag!'" in err["message"]
        await s.send(type="unsubscribe", tags=["okay", "a//b"])
        err = await s.expect("error", code="invalid_tag")
        assert "'a//b'" in err["message"]
        await publish(http, server.base, tags=["good"])  # "good" was not added
        end = await fence(http, server.base, ["okay"])  # "okay" was not removed
        assert await s.items_until("fence") == [end]


async def test_too_many_tags(server: Server, http: aiohttp.ClientSession) -> None:
    async with subscriber(server.ws) as s:
        await s.send(type="subscribe", tags=[f"t{i}" for i in range(101)])
        err = await s.expect("error", code="too_many_tags")
        assert "100" in err["message"]
        await s.send(type="subscribe", tags=[f"t{i}" for i in range(60)])
        await s.expect("subscribed")
        await s.send(type="subscribe", tags=[f"u{i}" for i in range(41)])
        await s.expect("error", code="too_many_tags")
        await s.send(type="subscribe", tags=[f"u{i}" for i in range(40)])  # exactly 100
        assert len((await s.expect("subscribed"))["tags"]) == 100
        await publish(http, server.base, tags=["u40"])  # refused earlier: not subscribed
        end = await fence(http, server.base, ["t0"])
        assert await s.items_until("fence") == [end]
    too_many = ",".join(f"q{i}" for i in range(101))
    async with subscriber(f"{server.ws}?tags={too_many}") as s:
        await s.expect("error", code="too_many_tags")
        await s.alive()


async def test_max_tags_is_configurable(make_server: ServerFactory) -> None:
    server = await make_server(max_tags=2)
    async with subscriber(server.ws + "?tags=a,b") as s:
        await s.expect("subscribed", tags=["a", "b"])
        await s.send(type="subscribe", tags=["c"])
        await s.expect("error", code="too_many_tags")


async def test_subscribe_rate_limit(server: Server, http: aiohttp.ClientSession) -> None:
    async with subscriber(server.ws) as s:
        # 40 subscribes in one go: the first 20 are within the limit whatever
        # the timing; the next ones arrive within the same second.
        for i in range(40):
            await s.send(type="subscribe", tags=[f"r{i}"])
        answers = [await s.next() for _ in range(40)]
        assert all(a["type"] == "subscribed" for a in answers[:20])
        limited = [i for i, a in enumerate(answers) if a.get("code") == "rate_limited"]
        assert limited and limited[0] == 20
        assert {a["type"] for a in answers} == {"subscribed", "error"}
        await s.alive()  # pings are not rate limited
        # a refused subscribe changed nothing
        await publish(http, server.base, tags=[f"r{limited[0]}"])
        end = await fence(http, server.base, ["r0"])
        assert await s.items_until("fence") == [end]


async def test_frame_over_64_kib_closes_with_1009(server: Server) -> None:
    async with subscriber(server.ws) as s:
        pad = 64 * 1024 - len('{"type":"ping","pad":""}')
        await s.ws.send(orjson.dumps({"type": "ping", "pad": "x" * pad}).decode())  # exactly 64 KiB
        await s.expect("pong")
        await s.ws.send("x" * (64 * 1024 + 1))
        with pytest.raises(ConnectionClosed) as info:
            await asyncio.wait_for(s.ws.recv(), WAIT)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1009


async def test_origin_checked_when_allowed_origins_set(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    server = await make_server(allowed_origins=("https://news.example",))
    with pytest.raises(InvalidStatus) as info:
        async with subscriber(server.ws + "?tags=world", origin="https://evil.example"):
            pass
    status, body = refused(info)
    assert status == 403 and body["error"]["code"] == "forbidden"
    async with http.get(
        server.base + "/v1/sse?tags=world", headers={"Origin": "https://evil.example"}
    ) as resp:
        assert resp.status == 403
    async with subscriber(server.ws + "?tags=world", origin="https://news.example") as s:
        await s.expect("subscribed")
    async with subscriber(server.ws + "?tags=world") as s:  # no Origin: not a browser
        await s.expect("subscribed")


async def test_any_origin_when_allowed_origins_unset(server: Server) -> None:
    async with subscriber(server.ws + "?tags=world", origin="https://anywhere.example") as s:
        await s.expect("subscribed")


async def test_subscriber_tokens(make_server: ServerFactory, http: aiohttp.ClientSession) -> None:
    server = await make_server(subscriber_tokens=("reader-1", "reader-2"))
    for url, headers in [
        (server.ws + "?tags=world", {}),
        (server.ws + "?tags=world&token=wrong", {}),
        (server.ws + "?tags=world", {"Authorization": "Bearer wrong"}),
    ]:
        with pytest.raises(InvalidStatus) as info:
            async with subscriber(url, additional_headers=headers):
                pass
        status, body = refused(info)
        assert status == 401 and body["error"]["code"] == "unauthorized"
    async with http.get(server.base + "/v1/sse?tags=world") as resp:
        assert resp.status == 401
    async with (
        subscriber(
            server.ws + "?tags=world", additional_headers={"Authorization": "Bearer reader-1"}
        ) as by_header,
        subscriber(server.ws + "?tags=world&token=reader-2") as by_query,
    ):
        await by_header.expect("subscribed")
        await by_query.expect("subscribed")
        one = await publish(http, server.base, tags=["world"])
        assert (await by_header.expect("item"))["item"]["id"] == one["id"]
        assert (await by_query.expect("item"))["item"]["id"] == one["id"]


async def test_public_wire_needs_no_token(server: Server) -> None:
    async with subscriber(server.ws + "?tags=world") as s:
        await s.expect("subscribed")


async def test_connection_limit(make_server: ServerFactory, http: aiohttp.ClientSession) -> None:
    server = await make_server(max_connections=2)
    async with subscriber(server.ws) as first, subscriber(server.ws + "?tags=a") as second:
        await second.expect("subscribed")
        with pytest.raises(InvalidStatus) as info:
            async with subscriber(server.ws):
                pass
        status, body = refused(info)
        assert status == 503 and body["error"]["code"] == "too_many_connections"
        async with http.get(server.base + "/v1/sse?tags=a") as resp:
            assert resp.status == 503
        await first.alive()
    # the two closed: room again (once the server has seen them go)
    end = time.monotonic() + WAIT
    while True:
        try:
            async with subscriber(server.ws + "?tags=b") as again:
                await again.expect("subscribed")
                break
        except InvalidStatus:
            assert time.monotonic() < end
            await asyncio.sleep(0.05)


async def test_bad_query_string_is_refused_before_upgrade(server: Server) -> None:
    for query in ("tags=a&since=yesterday", "tags=a&backfill=x", "tags=a!b", "tags=a&backfill=501"):
        with pytest.raises(InvalidStatus) as info:
            async with subscriber(f"{server.ws}?{query}"):
                pass
        status, body = refused(info)
        assert status == 400, query
        assert body["error"]["code"] in ("invalid_field", "invalid_tag")


# --- slow consumers ---------------------------------------------------------------------


async def test_slow_consumer_closed_with_4008_others_keep_everything_and_resume_loses_nothing(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    server = await make_server(max_buffer=64 * 1024)
    hub = server.app[HUB]
    body = "news " * 3_000  # ~15 kB items: the cap is a few of them
    ids: list[str] = []
    stop = asyncio.Event()

    async def publisher() -> None:
        for i in range(400):
            ids.append(
                (await publish(http, server.base, tags=["big"], title=f"n{i}", body=body))["id"]
            )
            if stop.is_set():
                break

    slow = await RawWS.open(server.settings.port, "/v1/ws?tags=big", rcvbuf=4096)
    try:
        async with subscriber(server.ws + "?tags=big", max_queue=None) as fast:
            await fast.expect("subscribed")
            writing = asyncio.create_task(publisher())
            await wait_for(lambda: hub.slow_closes >= 1 or writing.done(), "the slow close")
            assert hub.slow_closes == 1, "the slow consumer was never closed"
            # read what the slow client was sent before the close reached it
            data = await slow.read_to_eof()
            closed_at = len(ids)  # the wire goes on for everyone else
            await wait_for(lambda: len(ids) >= closed_at + 5 or writing.done(), "more items")
            stop.set()
            await writing
            end = await fence(http, server.base, ["big"])
            assert await fast.items_until("fence") == [*ids, end]  # the fast one got all
    finally:
        slow.close()
    frames = parse_frames(data)
    assert frames[-1] == (8, struct.pack("!H", 4008) + b"slow consumer")
    messages = [orjson.loads(p) for op, p in frames if op == 1]
    assert messages[0]["type"] == "subscribed" and messages[0]["tags"] == ["big"]
    got = [m["item"]["id"] for m in messages[1:]]
    assert got == ids[: len(got)] and len(got) < len(ids)
    # resuming from the last item it read loses nothing and repeats nothing
    since = got[-1] if got else "0"
    async with subscriber(f"{server.ws}?tags=big&since={since}", max_queue=None) as back:
        await back.expect("subscribed")
        assert got + await back.items_until("fence") == [*ids, end]
    assert hub.slow_closes == 1


# --- keep-alive and shutdown --------------------------------------------------------------


async def test_server_pings_and_closes_dead_connections(make_server: ServerFactory) -> None:
    server = await make_server(ping_interval=0.3)
    async with subscriber(server.ws + "?tags=world", ping_interval=None) as live:
        await live.expect("subscribed")
        dead = await RawWS.open(server.settings.port, "/v1/ws?tags=world")
        try:
            data = await dead.read_to_eof()  # it never answers the server's pings
        finally:
            dead.close()
        frames = parse_frames(data)
        assert 9 in [op for op, _ in frames]  # a ping came and went unanswered
        assert frames[-1] == (8, struct.pack("!H", 1002) + b"ping timeout")
        await live.alive()  # the client library answers pings: still connected


async def test_shutdown_closes_clients_with_1001(make_server: ServerFactory) -> None:
    server = await make_server()
    async with subscriber(server.ws + "?tags=world") as s:
        await s.expect("subscribed")
        await server.stop()
        with pytest.raises(ConnectionClosed) as info:
            await s.next()
        assert info.value.rcvd is not None
        assert (info.value.rcvd.code, info.value.rcvd.reason) == (1001, "server shutting down")


# --- Redis trouble ---------------------------------------------------------------------------


@pytest.fixture
def durable_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of its own that a test may kill -9: every write fsynced first."""
    server = RedisServer(tmp_path / "redis", appendonly=True, appendfsync="always").start()
    yield server
    server.stop()


@pytest.mark.fault
async def test_redis_restart_mid_stream(
    make_server: ServerFactory, durable_redis: RedisServer, http: aiohttp.ClientSession
) -> None:
    server = await make_server(redis_url=durable_redis.url)
    async with subscriber(server.ws + "?tags=*") as s:
        await s.expect("subscribed")
        before = [
            (await publish(http, server.base, tags=["world"], title=f"b{i}"))["id"]
            for i in range(5)
        ]
        assert await s.items_until("b4") == before

        durable_redis.kill()
        await wait_status(http, server.base, 503)
        await s.alive()  # the gateway keeps its clients while Redis is away
        status, _ = await post(http, server.base, {"title": "lost?", "tags": ["world"]})
        assert status == 503  # nothing can be published meanwhile, so nothing can be missed
        # history cannot be read now: a resuming client is told to come back
        async with subscriber(f"{server.ws}?tags=*&since={before[0]}") as r:
            await r.expect("subscribed")
            with pytest.raises(ConnectionClosed) as info:
                await r.next()
            assert info.value.rcvd is not None and info.value.rcvd.code == 1013

        durable_redis.start()
        await wait_status(http, server.base, 200)
        after = [
            (await publish(http, server.base, tags=["world"], title=f"a{i}"))["id"]
            for i in range(5)
        ]
        end = await fence(http, server.base, ["world"])
        assert await s.items_until("fence") == [*after, end]  # none lost, none repeated
    async with subscriber(f"{server.ws}?tags=world&since={before[2]}") as r:
        await r.expect("subscribed")
        end2 = await fence(http, server.base, ["world"], "fence 2")
        assert await r.items_until("fence 2") == [*before[3:], *after, end, end2]


@pytest.mark.fault
async def test_since_while_the_gateway_is_still_finding_the_stream(
    make_server: ServerFactory, durable_redis: RedisServer, http: aiohttp.ClientSession
) -> None:
    """A gateway that started while Redis was down never replays with a gap."""
    publisher = await make_server(redis_url=durable_redis.url, gateway=False)
    ids = [
        (await publish(http, publisher.base, tags=["world"], title=f"n{i}"))["id"] for i in range(4)
    ]
    durable_redis.kill()
    gateway = await make_server(redis_url=durable_redis.url, publisher=False)
    await wait_status(http, gateway.base, 503)
    durable_redis.start()
    # Connect at once, likely before the reader found the end of the stream.
    # The gateway either replays correctly or says 1013 (retry); never a gap.
    end = time.monotonic() + 30
    while True:
        async with subscriber(f"{gateway.ws}?tags=world&since={ids[0]}") as s:
            try:
                await s.expect("subscribed")
                replayed = await s.items_until("n3")
            except ConnectionClosed as closed:
                assert closed.rcvd is not None and closed.rcvd.code == 1013, closed
                assert not [m for m in s.seen if m["type"] == "item"]
                assert time.monotonic() < end
                await asyncio.sleep(0.1)
                continue
            assert replayed == ids[1:]
            last = await fence(http, publisher.base, ["world"])
            assert await s.items_until("fence") == [last]
            return


# --- several gateways -----------------------------------------------------------------------


async def test_two_gateways_serve_one_stream_and_resume_on_either(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    a = await make_server()
    b = await make_server(publisher=False)
    await wait_status(http, b.base, 200)
    async with subscriber(a.ws + "?tags=world") as on_a, subscriber(b.ws + "?tags=world") as on_b:
        await on_a.expect("subscribed")
        await on_b.expect("subscribed")
        first = [
            (await publish(http, a.base, tags=["world"], title=f"f{i}"))["id"] for i in range(3)
        ]
        assert await on_a.items_until("f2") == first
        assert await on_b.items_until("f2") == first
    more = [(await publish(http, a.base, tags=["world"], title=f"m{i}"))["id"] for i in range(3)]
    async with subscriber(f"{b.ws}?tags=world&since={first[-1]}") as s:  # seen on a, resumed on b
        await s.expect("subscribed")
        end = await fence(http, a.base, ["world"])
        assert await s.items_until("fence") == [*more, end]


@pytest.mark.fault
async def test_wire_gateway_with_two_workers_serves_and_resumes(
    make_server: ServerFactory, redis_url: str, http: aiohttp.ClientSession
) -> None:
    publisher = await make_server(gateway=False)
    ids = [
        (await publish(http, publisher.base, tags=["world"], title=f"n{i}"))["id"] for i in range(3)
    ]
    proc = WireProcess(
        ["gateway", "--workers", "2", "--redis", redis_url],
        env={"WIRE_LOG_LEVEL": "WARNING"},
        port=free_port(),
    ).start()
    try:
        await proc.ready()
        # a few connections, which the kernel spreads over the two workers
        async with (
            subscriber(f"{proc.ws}?tags=world&since={ids[0]}") as s1,
            subscriber(f"{proc.ws}?tags=world&since={ids[0]}") as s2,
            subscriber(f"{proc.ws}?tags=world&since={ids[0]}") as s3,
            subscriber(f"{proc.ws}?tags=world&since={ids[0]}") as s4,
        ):
            subs = [s1, s2, s3, s4]
            for s in subs:
                await s.expect("subscribed")
                assert await s.items_until("n2") == ids[1:]
            end = await fence(http, publisher.base, ["world"])
            for s in subs:
                assert await s.items_until("fence") == [end]
    finally:
        assert proc.terminate() == 0


# --- SSE ------------------------------------------------------------------------------------


class SSE:
    """A raw reader of an event stream, line by line, as ``curl -N`` shows it."""

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self.resp = resp

    async def line(self) -> str:
        raw = await asyncio.wait_for(self.resp.content.readline(), WAIT)
        assert raw, "the stream ended"
        assert raw.endswith(b"\n")
        return raw.decode()[:-1]

    async def event(self) -> list[str]:
        """The lines of the next event or comment block, without the blank line."""
        lines = []
        while (line := await self.line()) != "":
            lines.append(line)
        return lines

    async def items_until(self, title: str) -> list[str]:
        """Ids of item events up to the one titled ``title`` (comments skipped)."""
        ids = []
        while True:
            lines = await self.event()
            if lines[0].startswith(":"):
                continue
            assert lines[0].startswith("id: ") and lines[1] == "event: item", lines
            item = orjson.loads(lines[2].removeprefix("data: "))
            assert item["id"] == lines[0].removeprefix("id: ")
            ids.append(item["id"])
            if item["title"] == title:
                return ids


@asynccontextmanager
async def sse(
    http: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None
) -> AsyncIterator[SSE]:
    async with http.get(url, headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        assert resp.headers["Cache-Control"] == "no-cache"
        stream = SSE(resp)
        assert await stream.event() == ["retry: 1000"]
        yield stream


async def test_sse_framing_and_filtering(server: Server, http: aiohttp.ClientSession) -> None:
    before = await publish(http, server.base, tags=["world"], title="before")
    async with sse(http, server.base + "/v1/sse?tags=world") as events:
        head, data = await events.event()  # no id: it must not move Last-Event-ID
        assert head == "event: subscribed"
        assert orjson.loads(data.removeprefix("data: ")) == {
            "type": "subscribed",
            "tags": ["world"],
            "position": before["id"],
        }
        await publish(http, server.base, tags=["sport"])
        one = await publish(http, server.base, tags=["world/asia"], title="one")
        lines = await events.event()
        assert lines[:2] == [f"id: {one['id']}", "event: item"]
        assert lines[2].startswith("data: ") and len(lines) == 3
        assert orjson.loads(lines[2].removeprefix("data: ")) == one


async def test_sse_last_event_id_resume_is_gapless_while_publishing(
    server: Server, http: aiohttp.ClientSession
) -> None:
    ids: list[str] = []

    async def publisher() -> None:
        for i in range(120):
            ids.append((await publish(http, server.base, tags=["world"], title=f"n{i}"))["id"])
        ids.append(await fence(http, server.base, ["world"]))

    url = server.base + "/v1/sse?tags=world"
    got: list[str] = []
    async with sse(http, url) as events:
        await events.event()  # subscribed
        writing = asyncio.create_task(publisher())
        got += await events.items_until("n20")
    async with sse(http, url, headers={"Last-Event-ID": got[-1]}) as events:
        await events.event()
        got += await events.items_until("n70")
    async with sse(http, f"{url}&since={got[-1]}") as events:  # the same, as ?since=
        await events.event()
        got += await events.items_until("fence")
    await writing
    assert got == ids


async def test_sse_keepalive_comments(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    server = await make_server(ping_interval=0.1)
    async with sse(http, server.base + "/v1/sse?tags=world") as events:
        await events.event()
        assert await events.event() == [": keep-alive"]
        one = await publish(http, server.base, tags=["world"], title="one")
        assert await events.items_until("one") == [one["id"]]


async def test_sse_backfill_and_defaults_to_everything(
    server: Server, http: aiohttp.ClientSession
) -> None:
    items = [
        (await publish(http, server.base, tags=[f"t{i}"], title=f"n{i}"))["id"] for i in range(5)
    ]
    async with sse(http, server.base + "/v1/sse?backfill=2") as events:
        head, data = await events.event()
        assert head == "event: subscribed"
        assert orjson.loads(data.removeprefix("data: "))["tags"] == ["*"]
        assert await events.items_until("n4") == items[-2:]


async def test_sse_ends_cleanly_with_the_reason_when_the_server_closes_it(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    """A shutdown ends the event stream as a complete chunked body (not cut off:
    aiohttp's client would raise ClientPayloadError, curl exits 18), its last
    line a comment with the close code and reason."""
    server = await make_server()
    async with http.get(server.base + "/v1/sse?tags=world") as resp:
        assert (await sse_events(resp, 1))[0][0] == "subscribed"
        await server.stop()
        rest = await asyncio.wait_for(resp.content.read(), 10)
    assert rest.decode().splitlines()[-2:] == [": closed 1001 server shutting down", ""]


async def test_sse_refuses_bad_requests_with_json_errors(
    server: Server, http: aiohttp.ClientSession
) -> None:
    for query, headers, code in [
        ("tags=a!b", {}, "invalid_tag"),
        ("tags=a&since=soon", {}, "invalid_field"),
        ("tags=a", {"Last-Event-ID": "not-an-id"}, "invalid_field"),
        ("tags=a&backfill=9999", {}, "invalid_field"),
    ]:
        status, body = await get_json(http, f"{server.base}/v1/sse?{query}", headers=headers)
        assert status == 400 and body["error"]["code"] == code, query


@pytest.mark.parametrize("value", ["²", "9" * 5000, "-1", "x"])
async def test_query_string_backfill_that_is_not_a_number_is_a_clear_error(
    server: Server, http: aiohttp.ClientSession, value: str
) -> None:
    async with http.get(f"{server.base}/v1/sse?tags=a&backfill={value}") as resp:
        assert resp.status == 400
        assert (await resp.json())["error"]["field"] == "backfill"
    async with http.get(f"{server.base}/v1/ws?tags=a&backfill={value}") as resp:
        assert resp.status == 400


async def test_a_reading_client_replays_more_history_than_the_cap_without_a_close(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    """A resume larger than ``max_buffer`` is paced, not taken for a slow consumer
    (else such a client would be closed on every resume and never catch up)."""
    server = await make_server(max_buffer=64 * 1024)
    ids = [
        (await post(http, server.base, {"title": f"H{i}", "tags": ["deep"], "body": "x" * 2000}))[
            1
        ]["item"]["id"]
        for i in range(300)
    ]
    got: list[str] = []
    async with connect(server.ws + "?tags=deep&since=0") as ws:
        while len(got) < len(ids):
            msg = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
            if msg["type"] == "item":
                got.append(msg["item"]["id"])
            else:
                assert msg["type"] == "subscribed", msg
    assert got == ids
