"""Issue 11 (hardening), the gateway's catch-ups, recent window, SSE resume.

- A catch-up runs beside the connection's reads: pongs, pings, subscribes and
  unsubscribes are handled while history is still being sent (finding 10).
  To hold a catch-up mid-way without timing, the tests stop Redis (SIGSTOP)
  while the gateway reads history from it, and continue it (SIGCONT) once
  they have seen what they wait for; everything stays well inside the
  gateway's 5 s Redis timeout.
- A compact catch-up over a long stream runs in bounded memory (finding 11),
  measured as the RSS of a real ``wire gateway`` process.
- The recent-items window is capped in bytes too (finding 12).
- An ``EventSource`` opened with ``backfill`` resumes after a reconnect
  (finding 21), in headless Chromium.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import WSMsgType
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import Server, ServerFactory
from tests.support import RedisServer, WireProcess, chromium, free_port, get_json, post
from wire.core.entry import Entry
from wire.core.ids import ZERO
from wire.core.items import parse_submission
from wire.core.resume import Window
from wire.gateway.hub import Hub
from wire.gateway.reader import HUB
from wire.runtime.settings import Settings
from wire.storage.store import Store, connect

WAIT = 15.0
MIB = 1024 * 1024


def key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


async def load(redis_url: str, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Publish items straight through the store (fast); return them in stream order."""
    redis = connect(redis_url)
    store = Store(redis, Settings(redis_url=redis_url))
    stored: list[dict[str, Any]] = []
    try:
        for start in range(0, len(bodies), 200):
            chunk = bodies[start : start + 200]
            done = await asyncio.gather(*(store.publish(parse_submission(b)) for b in chunk))
            stored += [orjson.loads(p.json) for p in done]
    finally:
        await redis.aclose()
    return sorted(stored, key=lambda i: key(i["id"]))


async def publish(http: aiohttp.ClientSession, base: str, tags: list[str], title: str) -> str:
    status, body = await post(http, base, {"title": title, "tags": tags})
    assert status == 201, body
    return str(body["item"]["id"])


@contextmanager
def redis_stopped(redis: RedisServer) -> Iterator[None]:
    """Redis frozen (SIGSTOP) for the block: the gateway's history reads wait."""
    assert redis.proc is not None
    redis.proc.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        redis.proc.send_signal(signal.SIGCONT)


class Client:
    """A WebSocket client that answers the server's pings itself and counts them."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.pings = 0

    async def next(self) -> dict[str, Any]:
        """The next JSON message; pings are answered on the way; a close fails."""
        while True:
            msg = await asyncio.wait_for(self.ws.receive(), WAIT)
            if msg.type == WSMsgType.PING:
                self.pings += 1
                await self.ws.pong(msg.data)
            elif msg.type == WSMsgType.TEXT:
                parsed: dict[str, Any] = orjson.loads(msg.data)
                return parsed
            else:
                raise AssertionError(f"connection ended: {msg.type} {msg.data} {msg.extra}")

    async def until(self, done: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        """Messages up to and including the first one ``done`` accepts."""
        got = []
        while True:
            got.append(await self.next())
            if done(got[-1]):
                return got

    async def pings_answered(self, count: int) -> list[dict[str, Any]]:
        """Read (and keep) messages until ``count`` more server pings were answered."""
        target, got = self.pings + count, []
        while self.pings < target:
            msg = await asyncio.wait_for(self.ws.receive(), WAIT)
            if msg.type == WSMsgType.PING:
                self.pings += 1
                await self.ws.pong(msg.data)
            elif msg.type == WSMsgType.TEXT:
                got.append(orjson.loads(msg.data))
            else:
                raise AssertionError(f"connection ended: {msg.type} {msg.data} {msg.extra}")
        return got

    async def send(self, **message: Any) -> None:
        await self.ws.send_str(orjson.dumps(message).decode())


@asynccontextmanager
async def client(url: str) -> AsyncIterator[Client]:
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(url, autoping=False, max_msg_size=0) as ws,
    ):
        yield Client(ws)


def item_ids(messages: list[dict[str, Any]]) -> list[str]:
    return [m["item"]["id"] for m in messages if m["type"] == "item"]


def is_item(title: str) -> Callable[[dict[str, Any]], bool]:
    return lambda m: m["type"] == "item" and m["item"]["title"] == title


async def gateway_after(make_server: ServerFactory, **overrides: Any) -> Server:
    """A gateway started after the history was written: it replays it from Redis."""
    return await make_server(publisher=False, **overrides)


# ---- finding 10: a catch-up does not block the connection's reads ----------------


async def test_a_catch_up_waiting_on_redis_still_reads_pongs_and_pings(
    make_server: ServerFactory, redis_server: RedisServer, redis_url: str
) -> None:
    """Old gateways read nothing while replaying: the client's pongs went
    unread and a replay longer than the ping interval ended in 1002."""
    history = await load(redis_url, [{"title": f"h{i}", "tags": ["a"]} for i in range(1500)])
    gateway = await gateway_after(make_server, ping_interval=0.2)
    with redis_stopped(redis_server):
        async with client(gateway.ws + "?tags=a&since=0") as sub:
            assert (await sub.next())["type"] == "subscribed"
            # Several keep-alive rounds while the catch-up waits on Redis: each
            # round closes a connection whose previous pong was not read.
            assert await sub.pings_answered(4) == []
            await sub.send(type="ping")
            assert (await sub.next())["type"] == "pong"  # before any history
            assert redis_server.proc is not None
            redis_server.proc.send_signal(signal.SIGCONT)
            got = await sub.until(is_item(history[-1]["title"]))
            assert item_ids(got) == [i["id"] for i in history]  # all, once, in order
            await sub.send(type="ping")
            assert (await sub.next())["type"] == "pong"


async def stalled(hub: Hub) -> None:
    """Until the one connection's catch-up waits for its client to read."""
    await wait_for(lambda: any(c.held is not None for c in hub.conns))


def big(i: int, tag: str) -> dict[str, Any]:
    # 3 KB each: a page of 100 stays under the 1 MiB cap while the client does not read.
    return {"title": f"h{i}", "tags": [tag], "body": "x" * 3000}


async def test_a_subscribe_during_a_catch_up_takes_it_over_without_loss_or_repeat(
    make_server: ServerFactory, redis_url: str
) -> None:
    history = await load(redis_url, [big(i, "b" if i % 3 == 0 else "a") for i in range(4000)])
    since_b = history[3000]["id"]
    gateway = await gateway_after(make_server)
    publisher = await make_server(gateway=False)
    async with client(gateway.ws + "?tags=a&since=0") as sub, aiohttp.ClientSession() as http:
        await stalled(gateway.app[HUB])  # far from done: the client has not read yet
        await sub.send(type="subscribe", tags=["b"], since=since_b)
        got = await sub.until(lambda m: m["type"] == "subscribed" and m["tags"] == ["a", "b"])
        answered = len(got)
        live = [await publish(http, publisher.base, [t], f"live-{t}") for t in ("a", "b", "c")]
        fence = await publish(http, publisher.base, ["a"], "fence")
        got += await sub.until(is_item("fence"))
    # b items after since_b, or after the last item sent before the takeover.
    sent = item_ids(got[:answered])
    b_after = max(key(since_b), key(sent[-1]))
    expected = [i["id"] for i in history if i["tags"] == ["a"] or key(i["id"]) > b_after]
    assert item_ids(got) == [*expected, live[0], live[1], fence]
    # The subscribe was answered while the first catch-up still had items to send.
    assert sent[-1] != [i["id"] for i in history if i["tags"] == ["a"]][-1]


async def test_an_unsubscribe_during_a_catch_up_stops_that_tag_at_once(
    make_server: ServerFactory, redis_url: str
) -> None:
    history = await load(redis_url, [big(i, "b" if i % 2 else "a") for i in range(4000)])
    gateway = await gateway_after(make_server)
    publisher = await make_server(gateway=False)
    async with client(gateway.ws + "?tags=a,b&since=0") as sub, aiohttp.ClientSession() as http:
        await stalled(gateway.app[HUB])
        await sub.send(type="unsubscribe", tags=["b"])
        got = await sub.until(lambda m: m["type"] == "subscribed" and m["tags"] == ["a"])
        answered = len(got)
        await publish(http, publisher.base, ["b"], "live-b")
        fence = await publish(http, publisher.base, ["a"], "fence")
        got += await sub.until(is_item("fence"))
    before, after = item_ids(got[:answered]), item_ids(got[answered:])
    sent = before[-1]
    expected = [i["id"] for i in history if i["tags"] == ["a"] or key(i["id"]) <= key(sent)]
    assert before + after == [*expected, fence]  # every a, once, in order; no b after
    assert len(after) > 1  # the unsubscribe came mid-way


# ---- finding 11: compact catch-ups in bounded memory ------------------------------


def rss(pid: int) -> int:
    """Resident set size of a process, in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def read_items(url: str, count: int) -> list[str]:
    """Every item id a client reading as fast as it can gets, up to ``count``."""
    ids: list[str] = []
    async with client(url) as sub:
        while len(ids) < count:
            msg = await sub.next()
            if msg["type"] == "item":
                ids.append(msg["item"]["id"])
    return ids


STORIES = 10_000
ITEMS = 20_000


@pytest.mark.timeout(180)
async def test_four_compact_catch_ups_over_20000_items_stay_in_bounded_memory(
    redis_url: str,
) -> None:
    """RSS of a real gateway: 4 clients catching up ``since=0&compact=1`` over
    20,000 items of 1 KB (10,000 stories of two versions each).

    Old gateways held each client's whole range (and its compacted copy): the
    same run grew them by about 200 MiB and kept most of it. Now each
    catch-up holds one id per story and a page of entries: the peak stays
    under 64 MiB above rest. Once they are done Python holds no more objects
    than before, but its allocator keeps freed memory for reuse (about
    20-25 MiB here), so the bounds after are: within 32 MiB of the start,
    and a second round of the same grows it by less than 8 MiB (a leak of
    the first round's data would add tens of MiB per round).
    """
    body = "x" * 1000
    history = await load(
        redis_url,
        [
            {"title": f"t{i}", "tags": ["world"], "body": body, "guid": f"s{i % STORIES}"}
            for i in range(ITEMS)
        ],
    )
    newest = {i["guid"]: i["id"] for i in history}
    expected = [i["id"] for i in history if newest[i["guid"]] == i["id"]]
    assert len(expected) == STORIES
    gateway = WireProcess(
        ["gateway"], {"WIRE_REDIS_URL": redis_url, "WIRE_LOG_LEVEL": "WARNING"}, free_port()
    ).start()
    try:
        await gateway.ready()
        assert gateway.proc is not None
        pid = gateway.proc.pid
        # Warm up (Redis connection pool, first frames), then measure at rest.
        assert len(await read_items(gateway.ws + "?tags=world&backfill=20", 20)) == 20
        start = rss(pid)
        peak = start
        running = True

        async def sample() -> None:
            nonlocal peak
            while running:
                peak = max(peak, rss(pid))
                await asyncio.sleep(0.01)

        sampler = asyncio.create_task(sample())
        url = gateway.ws + "?tags=world&since=0&compact=1"
        after = []
        for _ in range(2):
            results = await asyncio.gather(*(read_items(url, STORIES) for _ in range(4)))
            assert all(r == expected for r in results)
            after.append(await settled_rss(pid, start + 32 * MIB, gateway.base))
        running = False
        await sampler
        print(
            f"gateway RSS: start {start / MIB:.0f} MiB, peak {peak / MIB:.0f} MiB, "
            f"after {[round(a / MIB) for a in after]} MiB"
        )
        assert peak - start < 64 * MIB, (start / MIB, peak / MIB)
        assert after[-1] - start < 32 * MIB, (start / MIB, after)
        assert after[1] - after[0] < 8 * MIB, after
    finally:
        gateway.terminate()


async def settled_rss(pid: int, below: int, base: str, wait: float = 10.0) -> int:
    """RSS once it is below ``below``, or after ``wait`` s.

    Closed connections' objects are freed by a garbage collection, which
    runs after so many allocations: requests to ``/healthz`` make them.
    """
    deadline = time.monotonic() + wait
    async with aiohttp.ClientSession() as http:
        while True:
            now = rss(pid)
            if now < below or time.monotonic() > deadline:
                return now
            for _ in range(20):
                async with http.get(base + "/healthz") as resp:
                    await resp.read()


async def test_a_compact_catch_up_past_its_story_cap_goes_out_uncompacted(
    make_server: ServerFactory, redis_url: str
) -> None:
    history = await load(
        redis_url, [{"title": f"t{i}", "tags": ["a"], "guid": f"s{i % 30}"} for i in range(90)]
    )
    newest = {i["guid"]: i["id"] for i in history}
    capped = await gateway_after(make_server, compact_stories=20)
    roomy = await gateway_after(make_server, compact_stories=30)
    got = await read_items(capped.ws + "?tags=a&since=0&compact=1", len(history))
    assert got == [i["id"] for i in history]  # every version, in order, once
    got = await read_items(roomy.ws + "?tags=a&since=0&compact=1", 30)
    assert got == [i["id"] for i in history if newest[i["guid"]] == i["id"]]


# ---- finding 12: the recent window's byte cap -------------------------------------


async def test_resume_past_the_byte_capped_window_reads_redis_and_misses_nothing(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    cap = 20_000
    server = await make_server(recent_bytes=cap)
    hub = server.app[HUB]
    ids = []
    for i in range(60):  # about 1.2 KB each: 72 KB in all, so the window drops most
        status, body = await post(
            http, server.base, {"title": f"n{i}", "tags": ["a"], "body": "y" * 1000}
        )
        assert status == 201
        ids.append(body["item"]["id"])
    fence = await publish(http, server.base, ["a"], "fence")
    await wait_for(lambda: hub.position == key(fence))
    assert 0 < hub.recent_bytes <= cap
    assert hub.recent_bytes == sum(len(e.json) for e in hub.recent)
    assert hub.recent_base is not None and hub.recent_base > key(ids[0])  # evicted
    for since in (ids[0], ids[-3]):  # from Redis, then from memory
        expected = [*ids[ids.index(since) + 1 :], fence]
        assert await read_items(server.ws + f"?tags=a&since={since}", len(expected)) == expected
    # One item bigger than the whole cap leaves an empty window that is still right.
    status, body = await post(
        http, server.base, {"title": "big", "tags": ["a"], "body": "z" * 30_000}
    )
    await wait_for(lambda: hub.position == key(body["item"]["id"]))
    assert hub.recent == [] and hub.recent_bytes == 0
    got = await read_items(server.ws + f"?tags=a&since={ids[-1]}", 2)
    assert got == [fence, body["item"]["id"]]


async def wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def entry(n: int, size: int) -> Entry:
    return Entry(f"{n}-0", ("a",), 5, f"g{n}", b"{" + b"x" * max(size - 2, 0) + b"}")


@settings(max_examples=200, deadline=None)
@given(
    batches=st.lists(st.lists(st.integers(1, 3000), min_size=1, max_size=8), max_size=30),
    cap=st.integers(1, 10_000),
    count=st.integers(1, 20),
    after=st.integers(0, 200),
)
def test_the_window_stays_under_its_caps_and_knows_what_it_covers(
    batches: list[list[int]], cap: int, count: int, after: int
) -> None:
    hub = Hub(recent=count, recent_bytes=cap)
    hub.start(ZERO)
    everything: list[Entry] = []
    for sizes in batches:
        batch = [entry(len(everything) + i + 1, s) for i, s in enumerate(sizes)]
        everything += batch
        hub.dispatch(batch)
        assert hub.recent_bytes == sum(len(e.json) for e in hub.recent) <= cap
        assert len(hub.recent) <= 2 * count
    window = Window((after, 0), hub.position)
    cached = hub.recent_window(window)
    if cached is None:
        assert hub.recent_base is not None and window.after < hub.recent_base
    else:
        assert cached == [e for e in everything if window.after < e.key <= window.upto]


# ---- finding 21: SSE resumes whatever URL it was opened with ----------------------


async def sse_ids(resp: aiohttp.ClientResponse, count: int) -> list[str]:
    """The ids of the first ``count`` item events of an event stream."""
    ids: list[str] = []
    while len(ids) < count:
        line = (await asyncio.wait_for(resp.content.readline(), WAIT)).decode().rstrip("\n")
        if line.startswith("id: "):
            ids.append(line.removeprefix("id: "))
    return ids


@pytest.mark.parametrize(
    "query",
    [
        "tags=a&backfill=1",
        "tags=a&backfill=1&compact=1",
        "tags=a&since=0&backfill=2",
        "tags=a&since=0&compact=1",
    ],
)
async def test_sse_last_event_id_wins_over_backfill_and_since(
    server: Server, http: aiohttp.ClientSession, query: str
) -> None:
    ids = [await publish(http, server.base, ["a"], f"n{i}") for i in range(5)]
    headers = {"Last-Event-ID": ids[1]}
    async with http.get(f"{server.base}/v1/sse?{query}", headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        assert await sse_ids(resp, 3) == ids[2:]
    # Without the header the query's own since and backfill still apply (and are checked).
    status, body = await get_json(http, f"{server.base}/v1/sse?tags=a&since=0&backfill=2")
    assert status == 400 and body["error"]["field"] == "backfill"




@pytest.mark.browser
async def test_an_event_source_opened_with_backfill_resumes_after_the_gateway_restarts(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    """Browsers never retry a 4xx: answering the reconnect (Last-Event-ID with
    the URL's backfill) with 400 ended the feed for good."""
    publisher = await make_server(gateway=False)
    gateway = await make_server(publisher=False)
    old = [await publish(http, publisher.base, ["world"], f"old{i}") for i in range(2)]
    async with chromium() as browser:
        page = await browser.new_page()
        await page.goto(gateway.base + "/healthz")
        await page.evaluate(
            """() => {
                window.got = [];
                window.source = new EventSource("/v1/sse?tags=world&backfill=1");
                source.addEventListener("item", (e) => got.push(e.lastEventId));
            }"""
        )

        async def received(n: int) -> list[str]:
            await page.wait_for_function(f"window.got.length >= {n}", timeout=WAIT * 1000)
            got: list[str] = await page.evaluate("window.got")
            return got

        assert await received(1) == old[-1:]
        live = await publish(http, publisher.base, ["world"], "live")
        assert await received(2) == [old[-1], live]
        await gateway.stop()
        missed = [
            await publish(http, publisher.base, ["world"], f"missed{i}") for i in range(3)
        ]
        await make_server(publisher=False, port=gateway.settings.port)
        assert await received(5) == [old[-1], live, *missed]
        after = await publish(http, publisher.base, ["world"], "after")
        assert await received(6) == [old[-1], live, *missed, after]
        assert await page.evaluate("window.source.readyState") == 1  # open
