"""The subscriber library against a real gateway and Redis.

Every test that checks delivery publishes a last sentinel item and requires
it to be the next thing yielded, so a duplicate or a stray item anywhere in
the run shows up as a mismatch.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypedDict

import aiohttp
import orjson
import pytest
import redis
from websockets.asyncio.server import ServerConnection, serve

import subscriber
from subscriber import (
    AuthError,
    Disconnected,
    Feed,
    HistoryTruncated,
    Item,
    Notice,
    Subscribed,
    SubscriptionError,
    Withdrawal,
)
from tests.conftest import Server, ServerFactory
from tests.support import item_message, publish
from wire.gateway.reader import HUB
from wire.storage import keys


class Delays(TypedDict):
    """Reconnection delays for ``subscriber.connect``, as keyword arguments."""

    min_delay: float
    max_delay: float


FAST: Delays = {"min_delay": 0.05, "max_delay": 0.5}


async def until(condition: Callable[[], bool], within: float = 10.0) -> None:
    """Wait for ``condition`` to hold, failing after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def take(feed: Feed, n: int, within: float = 20.0) -> list[subscriber.Event]:
    """The next ``n`` events, within ``within`` seconds."""
    got: list[subscriber.Event] = []
    async with asyncio.timeout(within):
        while len(got) < n:
            got.append(await anext(feed))
    return got


async def collect(feed: Feed, into: list[subscriber.Event], n: int) -> None:
    """Append events to ``into`` as they arrive until there are ``n`` (run as a task)."""
    async with asyncio.timeout(30):
        while len(into) < n:
            into.append(await anext(feed))


def ids(events: list[subscriber.Event]) -> list[str]:
    return [e.id for e in events]


async def test_items_arrive_as_typed_objects_and_updates_are_flagged(
    server: Server, http: aiohttp.ClientSession
) -> None:
    async with subscriber.connect(server.ws, ["world"]) as feed:
        await publish(
            http,
            server.base,
            "Quake hits coast",
            ["world/asia", "science"],
            subtitle="Magnitude 6.1",
            mark="Breaking",
            urgency=1,
            url="https://example.com/quake",
            guid="quake-1",
        )
        await publish(http, server.base, "Quake toll rises", ["world/asia"], guid="quake-1")
        first, second = await take(feed, 2)
    assert isinstance(first, Item) and isinstance(second, Item)
    assert (first.title, first.subtitle, first.mark, first.urgency) == (
        "Quake hits coast",
        "Magnitude 6.1",
        "Breaking",
        1,
    )
    assert first.tags == ("world/asia", "science")
    assert first.url == "https://example.com/quake"
    assert isinstance(first.published_at, datetime) and first.published_at.tzinfo is not None
    assert not first.is_update
    assert (second.guid, second.version, second.mark, second.is_update) == (
        "quake-1",
        2,
        "Updated",
        True,
    )
    assert second.raw["title"] == "Quake toll rises"


async def test_exactly_once_in_order_across_a_gateway_restart(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    gateway = await make_server()
    publisher = await make_server(gateway=False)  # keeps publishing while the gateway is down
    notices: list[Notice] = []
    got: list[subscriber.Event] = []
    async with subscriber.connect(gateway.ws, ["world"], on_notice=notices.append, **FAST) as feed:
        consumer = asyncio.create_task(collect(feed, got, 10))
        want = [(await publish(http, gateway.base, f"before {i}"))["id"] for i in range(3)]
        await until(lambda: len(got) == 3)
        await gateway.stop()
        for i in range(3):
            await publish(http, publisher.base, f"elsewhere {i}", ["sport"])
            want.append((await publish(http, publisher.base, f"while down {i}"))["id"])
        restarted = await make_server(port=gateway.settings.port)
        want += [(await publish(http, restarted.base, f"after {i}"))["id"] for i in range(3)]
        want.append((await publish(http, restarted.base, "sentinel"))["id"])
        await consumer
    assert ids(got) == want
    assert any(isinstance(n, Disconnected) and n.code == 1001 for n in notices)


async def test_a_live_feed_that_has_yielded_nothing_yet_loses_nothing_across_a_restart(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    gateway = await make_server()
    publisher = await make_server(gateway=False)
    got: list[subscriber.Event] = []
    async with subscriber.connect(gateway.ws, ["world"], **FAST) as feed:
        consumer = asyncio.create_task(collect(feed, got, 3))
        await gateway.stop()
        want = [(await publish(http, publisher.base, f"while down {i}"))["id"] for i in range(2)]
        restarted = await make_server(port=gateway.settings.port)
        want.append((await publish(http, restarted.base, "sentinel"))["id"])
        await consumer
    assert ids(got) == want


async def test_exactly_once_in_order_across_a_slow_consumer_close(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    server = await make_server(max_buffer=64 * 1024)
    hub = server.app[HUB]
    notices: list[Notice] = []
    async with subscriber.connect(server.ws, ["world"], on_notice=notices.append, **FAST) as feed:
        want = [(await publish(http, server.base, "first"))["id"]]
        got = await take(feed, 1)
        # The application stops reading; the gateway's buffer for it grows
        # until it gives up on the connection (its counter is only waited on).
        body = "news " * 12_000
        async with asyncio.timeout(40):
            while hub.slow_closes == 0:
                for i in range(10):
                    want.append((await publish(http, server.base, f"big {i}", body=body))["id"])
        want.append((await publish(http, server.base, "sentinel"))["id"])
        got += await take(feed, len(want) - 1, within=40)
    assert ids(got) == want
    assert any(isinstance(n, Disconnected) and n.code == 4008 for n in notices)


async def test_a_bad_token_raises_auth_error_at_once_without_retrying(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    server = await make_server(subscriber_tokens=("reader-secret",))
    notices: list[Notice] = []
    for token in (None, "wrong"):
        with pytest.raises(AuthError) as caught:
            async with asyncio.timeout(5):
                async with subscriber.connect(
                    server.ws, ["world"], token=token, on_notice=notices.append
                ):
                    pass
        assert (caught.value.status, caught.value.code) == (401, "unauthorized")
        assert "token" in caught.value.message
    assert notices == []  # a retry would have been announced with a Disconnected notice
    async with subscriber.connect(server.ws, ["world"], token="reader-secret") as feed:
        sent = (await publish(http, server.base, "for readers only"))["id"]
        assert ids(await take(feed, 1)) == [sent]


async def test_a_cursor_file_resumes_a_new_connect_after_the_last_handled_item(
    server: Server, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    cursor = tmp_path / "cursor"
    async with subscriber.connect(server.ws, ["world"], cursor_file=cursor) as feed:
        want = [(await publish(http, server.base, f"one {i}"))["id"] for i in range(3)]
        got = await take(feed, 2)
    assert cursor.read_text().strip() == want[1]

    # Published while no subscriber runs at all.
    want += [(await publish(http, server.base, f"two {i}"))["id"] for i in range(2)]
    with pytest.raises(RuntimeError, match="handler crashed"):
        async with subscriber.connect(server.ws, ["world"], cursor_file=cursor) as feed:
            assert ids(await take(feed, 1)) == [want[2]]
            raise RuntimeError("handler crashed")
    # The item being handled when the application failed is not recorded...
    assert cursor.read_text().strip() == want[1]

    async with subscriber.connect(server.ws, ["world"], cursor_file=cursor) as feed:
        want.append((await publish(http, server.base, "sentinel"))["id"])
        got += await take(feed, 4)  # ...so it comes again, once
    assert ids(got) == want
    assert cursor.read_text().strip() == want[-1]


async def test_subscribe_and_unsubscribe_while_connected(
    server: Server, http: aiohttp.ClientSession
) -> None:
    notices: list[Notice] = []
    got: list[subscriber.Event] = []

    def confirmed_tags() -> tuple[str, ...] | None:
        confirmed = [n.tags for n in notices if isinstance(n, Subscribed)]
        return confirmed[-1] if confirmed else None

    async with subscriber.connect(server.ws, ["sport"], on_notice=notices.append) as feed:
        consumer = asyncio.create_task(collect(feed, got, 3))
        await publish(http, server.base, "ignored: world before subscribing", ["world"])
        want = [(await publish(http, server.base, "sport 1", ["sport"]))["id"]]
        await until(lambda: len(got) == 1)

        await feed.subscribe(["World/Europe"])  # normalized like the server does
        assert feed.tags == ("sport", "world/europe")
        await until(lambda: confirmed_tags() == ("sport", "world/europe"))
        want.append((await publish(http, server.base, "europe 1", ["world/europe/france"]))["id"])
        await until(lambda: len(got) == 2)

        await feed.unsubscribe(["sport"])
        await until(lambda: confirmed_tags() == ("world/europe",))
        await publish(http, server.base, "ignored: sport after unsubscribing", ["sport"])
        want.append((await publish(http, server.base, "sentinel", ["world/europe"]))["id"])
        await consumer
    assert ids(got) == want


async def test_a_refused_subscribe_raises_and_the_feed_keeps_running(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    server = await make_server(max_tags=2)
    with pytest.raises(SubscriptionError) as local:
        subscriber.connect(server.ws, ["no spaces!"])
    assert local.value.code == "invalid_tag"
    async with subscriber.connect(server.ws, ["world"]) as feed:
        await feed.subscribe(["sport", "culture"])
        with pytest.raises(SubscriptionError) as caught:
            async with asyncio.timeout(10):
                await anext(feed)
        assert caught.value.code == "too_many_tags"
        assert feed.tags == ("world",)
        sent = (await publish(http, server.base, "still here"))["id"]
        assert ids(await take(feed, 1)) == [sent]


async def test_history_truncated_is_a_notice_and_the_rest_still_arrives(
    make_server: ServerFactory, http: aiohttp.ClientSession, redis_url: str
) -> None:
    publisher = await make_server(gateway=False)
    first = (await publish(http, publisher.base, "trimmed away"))["id"]
    kept = (await publish(http, publisher.base, "kept"))["id"]
    # What retention does to old entries, done now (before the gateway starts,
    # so its memory of recent items does not cover them).
    with redis.Redis.from_url(redis_url) as client:
        client.xtrim(keys.STREAM, minid=kept, approximate=False)
    gateway = await make_server(publisher=False)
    notices: list[Notice] = []
    since = f"{int(first.split('-')[0]) - 1}-0"
    async with subscriber.connect(
        gateway.ws, ["world"], since=since, on_notice=notices.append
    ) as feed:
        sentinel = (await publish(http, publisher.base, "sentinel"))["id"]
        assert ids(await take(feed, 2)) == [kept, sentinel]
    # (It may have been told "gateway starting, retry" first: it just started.)
    assert any(isinstance(n, HistoryTruncated) for n in notices), notices


async def test_client_guard_drops_repeats_and_resumes_after_the_last_yielded() -> None:
    """Against a misbehaving peer: repeated and backward ids never reach the application."""
    subscribes: list[dict[str, Any]] = []

    def entry(item_id: str, **extra: Any) -> str:
        return item_message(item_id, guid="g", **extra)  # one story: its kill names it

    async def handler(ws: ServerConnection) -> None:
        subscribes.append(orjson.loads(await ws.recv()))
        await ws.send(orjson.dumps({"type": "subscribed", "tags": subscribes[-1]["tags"]}).decode())
        if len(subscribes) == 1:
            for item_id in ("1-0", "2-0", "2-0", "1-5", "10-0"):
                await ws.send(entry(item_id))
            await ws.close(4008, "slow consumer")
            return
        await ws.send(entry("10-0"))
        await ws.send(
            entry("11-0", version=2, pubstatus="canceled", reason="legal", title=None, tags=["x"])
        )
        await ws.send(entry("12-0", tags=["world/europe"]))
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0) as peer:
        port = peer.sockets[0].getsockname()[1]
        url = f"ws://127.0.0.1:{port}/v1/ws"
        async with subscriber.connect(url, ["world", "x"], **FAST) as feed:
            got = await take(feed, 5)
    assert ids(got) == ["1-0", "2-0", "10-0", "11-0", "12-0"]
    assert subscribes[1]["since"] == "10-0"
    kill = got[3]
    assert isinstance(kill, Withdrawal)
    assert (kill.guid, kill.version, kill.reason, kill.tags) == ("g", 2, "legal", ("x",))


async def test_a_flash_sent_ahead_is_shown_once_and_does_not_move_the_cursor() -> None:
    """Urgent items may overtake queued ones (``"ahead": true``); resume stays gapless."""
    subscribes: list[dict[str, Any]] = []

    async def handler(ws: ServerConnection) -> None:
        subscribes.append(orjson.loads(await ws.recv()))
        await ws.send(
            orjson.dumps({"type": "subscribed", "tags": ["world"], "position": "0-0"}).decode()
        )
        if len(subscribes) == 1:
            # 1 arrives, then flash 5 overtakes 2..4, then the line drops.
            for msg in (item_message("1-0"), item_message("5-0", ahead=True), item_message("2-0")):
                await ws.send(msg)
            await ws.close(1001, "going away")
            return
        for item_id in ("3-0", "4-0", "5-0", "6-0"):  # the replay includes 5 in order
            await ws.send(item_message(item_id))
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0) as peer:
        port = peer.sockets[0].getsockname()[1]
        async with subscriber.connect(f"ws://127.0.0.1:{port}/v1/ws", ["world"], **FAST) as feed:
            got = await take(feed, 6)
            assert feed.last_id == "6-0"
    assert ids(got) == ["1-0", "5-0", "2-0", "3-0", "4-0", "6-0"]
    assert subscribes[1]["since"] == "2-0", "the cursor never jumped to the flash"
