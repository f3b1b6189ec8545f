"""Hostile restarts: real processes killed with SIGKILL, Redis restarted."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import websockets
from aiohttp import web
from websockets.exceptions import ConnectionClosed

from tests.support import (
    EDITOR_TOKEN,
    Background,
    Receiver,
    RedisServer,
    WireProcess,
    free_port,
    get_json,
    publish,
    wait_for,
)

pytestmark = [pytest.mark.fault, pytest.mark.timeout(180)]

EDITOR = {"Authorization": f"Bearer {EDITOR_TOKEN}"}
BASE_ENV = {"WIRE_EDITOR_TOKENS": EDITOR_TOKEN, "WIRE_LOG_LEVEL": "WARNING"}


def sort_key(item_id: str) -> tuple[int, int]:
    ms, _, seq = item_id.partition("-")
    return int(ms), int(seq)


class WsClient(Background):
    """A WebSocket subscriber that resumes with ``since`` (its last id) after every drop."""

    def __init__(self, url: Callable[[], str], tags: str = "*") -> None:
        self.url = url
        self.tags = tags
        self.ids: list[str] = []
        self.connects = 0
        self.subscribed = asyncio.Event()


    async def run(self) -> None:
        while True:
            query = f"?tags={self.tags}"
            if self.ids:
                query += f"&since={self.ids[-1]}"
            try:
                async with websockets.connect(self.url() + query, open_timeout=2) as ws:
                    self.connects += 1
                    async for raw in ws:
                        msg = orjson.loads(raw)
                        if msg.get("type") == "subscribed":
                            self.subscribed.set()
                        elif msg.get("type") == "item":
                            self.ids.append(msg["item"]["id"])
            except (OSError, ConnectionClosed, TimeoutError, websockets.InvalidHandshake):
                pass
            await asyncio.sleep(0.05)


class SseClient(Background):
    """An SSE reader that reconnects with Last-Event-ID after every drop."""

    def __init__(self, http: aiohttp.ClientSession, url: Callable[[], str]) -> None:
        self.http = http
        self.url = url
        self.ids: list[str] = []
        self.connects = 0


    async def run(self) -> None:
        while True:
            headers = {"Last-Event-ID": self.ids[-1]} if self.ids else {}
            try:
                async with self.http.get(self.url() + "?tags=*", headers=headers) as resp:
                    if resp.status == 200:
                        self.connects += 1
                        event, eid = "", ""
                        async for line_b in resp.content:
                            line = line_b.decode().rstrip("\n")
                            if line.startswith("event: "):
                                event = line[7:]
                            elif line.startswith("id: "):
                                eid = line[4:]
                            elif line == "" and event == "item" and eid:
                                self.ids.append(eid)
                                event, eid = "", ""
                            elif line == "":
                                event, eid = "", ""
            except (aiohttp.ClientError, OSError, TimeoutError):
                pass
            await asyncio.sleep(0.05)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis", appendonly=True).start()
    yield server
    server.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def stream_ids(redis_server: RedisServer) -> list[str]:
    with redis_server.client() as r:
        rows: Any = r.xrange("wire:items")
        return [eid.decode() for eid, _ in rows]


async def test_a_killed_run_with_an_embargo_due_meanwhile_resumes_every_client_exactly(
    own_redis: RedisServer, http: aiohttp.ClientSession
) -> None:
    port = free_port()
    env = {**BASE_ENV, "WIRE_REDIS_URL": own_redis.url}
    run = WireProcess(["run"], env, port).start()
    # The same port after the restart: the clients reconnect to the new process.
    subs = [WsClient(lambda: f"ws://127.0.0.1:{port}/v1/ws") for _ in range(3)]
    sse = SseClient(http, lambda: f"http://127.0.0.1:{port}/v1/sse")
    clients: list[WsClient | SseClient] = [*subs, sse]
    try:
        await run.ready()
        for c in clients:
            c.start()
        await asyncio.wait_for(asyncio.gather(*(s.subscribed.wait() for s in subs)), 10)
        due = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=2)
        held = await publish(http, run.base, "embargoed", embargo_until=due.isoformat())
        assert held["pubstatus"] == "withheld"
        first = [(await publish(http, run.base, f"a{i}"))["id"] for i in range(200)]
        await wait_for(lambda: len(subs[0].ids) >= 50, "some deliveries", within=20)
        run.kill()
        # Stay down past the embargo's time: it falls due while nobody runs.
        await wait_for(
            lambda: datetime.datetime.now(datetime.UTC) > due, "the embargo's time", within=10
        )
        run = WireProcess(["run"], env, port).start()
        await run.ready()
        second = [(await publish(http, run.base, f"b{i}"))["id"] for i in range(100)]
        stored = stream_ids(own_redis)
        assert len(stored) == 301, len(stored)
        assert set(first + second) <= set(stored)
        await wait_for(
            lambda: all(len(c.ids) >= len(stored) for c in clients), "every item", within=30
        )
        for s in subs:
            assert s.ids == stored, (len(s.ids), len(set(s.ids)))
        assert sse.ids == stored
        status, body = await get_json(http, run.base + "/readyz")
        assert status == 200, body
    finally:
        for c in clients:
            await c.stop()
        run.kill()


class CountingReceiver(Receiver):
    """A receiver that also records the most POSTs it ever had under way at once."""

    def __init__(self, delay: float) -> None:
        super().__init__(delay=delay)
        self.inflight = 0
        self.most = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.inflight += 1
        self.most = max(self.most, self.inflight)
        try:
            return await super().handle(request)
        finally:
            self.inflight -= 1


async def test_a_lease_taken_over_after_a_redis_outage_never_overlaps_the_post_under_way(
    own_redis: RedisServer, http: aiohttp.ClientSession
) -> None:
    receiver = CountingReceiver(delay=3.0)
    await receiver.start()
    env = {
        **BASE_ENV,
        "WIRE_REDIS_URL": own_redis.url,
        "WIRE_ADMIN_TOKENS": "adm",
        "WIRE_WEBHOOK_LEASE": "1",
        "WIRE_WEBHOOK_ALLOW_PRIVATE": "1",
        "WIRE_WEBHOOK_BACKOFF": "0.01",
    }
    pub = WireProcess(["publisher"], env, free_port()).start()
    deliverers: list[WireProcess] = []
    try:
        await pub.ready()
        async with http.post(
            pub.base + "/v1/webhooks",
            json={"url": receiver.url, "tags": ["*"]},
            headers={"Authorization": "Bearer adm"},
        ) as resp:
            assert resp.status == 201, await resp.text()
        deliverers = [WireProcess(["deliver"], env, free_port()).start() for _ in range(2)]
        ids = [(await publish(http, pub.base, f"w{i}"))["id"] for i in range(3)]
        await wait_for(lambda: receiver.inflight == 1, "a POST under way", within=20)
        # Redis away for longer than the lease (1 s): the holder cannot renew it.
        own_redis.kill()
        await asyncio.sleep(1.5)
        own_redis.start()
        await wait_for(lambda: len(set(receiver.ok_ids())) >= 3, "every item", within=60)
        got = receiver.ok_ids()
        assert sorted(set(got), key=sort_key) == ids  # none skipped
        # No deliverer died: nothing may come twice, and never two at once.
        assert receiver.most == 1, f"{receiver.most} POSTs under way at once: {got}"
        assert got == ids, got
    finally:
        for d in deliverers:
            d.kill()
        pub.kill()
        await receiver.stop()
