"""One damaged stream entry must not end or wedge any loop that reads the stream.

The damage is written into Redis directly (the one fair place to: no API
writes it); everything else goes through the real interfaces. Each test then
checks that later good items still arrive, the damage is logged, and
``/readyz`` reports every task running.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import aiohttp
import pytest
import redis as sync_redis

from tests.conftest import Server, ServerFactory
from tests.support import (
    WEBHOOKS_FAST,
    Receiver,
    admin,
    eventually,
    get_json,
    publish,
    sse_items,
    wait_for,
)
from wire.runtime.supervisor import Supervisor
from wire.storage import keys
from wire.web.appkeys import ARRIVALS

Http = aiohttp.ClientSession

#: Stream entries no writer of wire makes: each lacks a field or holds a bad one.
DAMAGED: list[dict[str, Any]] = [
    {"t": "x", "u": "1", "g": "no-json", "l": "en"},  # no ``j``
    {"j": b"not json", "t": "x", "u": "1", "g": "bad-json"},  # ``j`` unreadable, no ``l``
    {"j": b"{}", "t": "x", "u": "urgent", "g": "bad-urgency", "l": "en"},  # ``u`` not a number
    {"j": b"{}", "u": "1", "g": "no-tags", "l": "en"},  # no ``t``
    {"j": b"{}", "t": b"\xff\xfe", "u": "1", "g": "bad-utf8", "l": "en"},
]


def tag() -> str:
    return "loop-" + os.urandom(4).hex()


def add_damaged(server: Server) -> list[str]:
    """Append every DAMAGED entry to the item stream; answer their ids."""
    with sync_redis.Redis.from_url(server.settings.redis_url or "") as client:
        return [client.xadd(keys.STREAM, fields).decode() for fields in DAMAGED]


async def all_tasks_ready(http: Http, server: Server) -> dict[str, Any]:
    """/readyz once it answers 200 with every check true; its body."""
    found: tuple[int, dict[str, Any]] = await eventually(
        lambda: get_json(http, server.base + "/readyz"),
        lambda got: got[0] == 200 and all(got[1]["checks"].values()),
        "/readyz to report every task running",
        within=8,
    )
    return found[1]


def logged(caplog: pytest.LogCaptureFixture, ids: list[str]) -> bool:
    text = "\n".join(r.getMessage() for r in caplog.records)
    return all(i in text for i in ids)


async def test_the_gateway_reader_skips_a_damaged_entry_and_delivers_what_follows(
    server: Server, http: Http, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    t = tag()
    await all_tasks_ready(http, server)
    async with http.get(f"{server.base}/v1/sse", params={"tags": t}) as resp:
        assert resp.status == 200
        before = await publish(http, server.base, "before", [t])
        assert [i["id"] for i in await sse_items(resp, 1)] == [before["id"]]
        bad = add_damaged(server)
        after = await publish(http, server.base, "after", [t])
        assert [i["id"] for i in await sse_items(resp, 1)] == [after["id"]]
    assert logged(caplog, bad)
    body = await all_tasks_ready(http, server)
    assert body["checks"]["task:reader"] is True and body["checks"]["reader"] is True


async def test_history_and_long_polls_read_past_a_damaged_entry(
    make_server: ServerFactory, http: Http, caplog: pytest.LogCaptureFixture
) -> None:
    # A publisher alone: its long polls have a watcher of their own.
    server = await make_server(gateway=False)
    caplog.set_level(logging.WARNING)
    t = tag()
    before = await publish(http, server.base, "before", [t])
    params = {"after": before["id"], "wait": "5", "tags": t}
    # The first wait starts the watcher; it answers empty once its wait ends.
    status, body = await get_json(http, f"{server.base}/v1/items", params={**params, "wait": "0.1"})
    assert status == 200 and body["items"] == []
    # Waiting, the poll is woken only by the watcher: a timed-out wait answers empty.
    waiting = asyncio.create_task(get_json(http, f"{server.base}/v1/items", params=params))
    await wait_for(lambda: server.app[ARRIVALS].waiting == 1, "the long poll to wait")
    bad = add_damaged(server)
    after = await publish(http, server.base, "after", [t])
    status, body = await waiting
    assert status == 200, body
    assert [i["id"] for i in body["items"]] == [after["id"]], (body, after)
    status, body = await get_json(http, f"{server.base}/v1/items", params={"tags": t})
    assert status == 200, body
    assert [i["id"] for i in body["items"]] == [after["id"], before["id"]]  # newest first
    assert logged(caplog, bad)
    ready = await all_tasks_ready(http, server)
    assert ready["checks"]["task:arrivals"] is True


async def test_a_webhook_is_delivered_past_a_damaged_entry(
    make_server: ServerFactory, http: Http, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    receiver = await Receiver().start()
    try:
        server = await make_server(**WEBHOOKS_FAST)
        t = tag()
        async with http.post(
            server.base + "/v1/webhooks", json={"url": receiver.url, "tags": [t]}, headers=admin()
        ) as resp:
            assert resp.status == 201, await resp.text()
        before = await publish(http, server.base, "before", [t])
        await wait_for(lambda: len(receiver.ok()) >= 1, "the first delivery")
        bad = add_damaged(server)
        after = await publish(http, server.base, "after", [t])
        await wait_for(lambda: len(receiver.ok()) >= 2, "the delivery after the damage", 8)
        assert receiver.ok_ids() == [before["id"], after["id"]]
    finally:
        await receiver.stop()
    assert logged(caplog, bad)
    ready = await all_tasks_ready(http, server)
    assert ready["checks"]["task:webhooks"] is True


async def test_a_task_ended_by_a_stray_cancel_is_restarted_and_reported_down_meanwhile() -> None:
    """A CancelledError the task was not sent (a cancelled future it awaited,
    a library's timeout) ended the supervision for good while /readyz said running."""
    supervisor = Supervisor(backoff=0.01)
    runs = 0
    again = asyncio.Event()

    async def stray() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            future.cancel()
            await future  # raises CancelledError in a task nobody cancelled
        again.set()
        await asyncio.Event().wait()

    supervisor.start("stray", stray)
    try:
        await asyncio.wait_for(again.wait(), 5)
        assert supervisor.failures["stray"] == 1 and supervisor.status() == {"stray": True}
    finally:
        await supervisor.stop()
    assert supervisor.tasks == {}


async def test_a_reader_of_everything_never_sees_the_damaged_entries(
    server: Server, http: Http, caplog: pytest.LogCaptureFixture
) -> None:
    """The stand-in matches no subscription, ``*`` included: an event stream and a
    history read of everything go from the item before it to the item after."""
    caplog.set_level(logging.WARNING)
    t = tag()
    await all_tasks_ready(http, server)
    async with http.get(f"{server.base}/v1/sse") as resp:
        assert resp.status == 200
        before = await publish(http, server.base, "before", [t])
        assert [i["id"] for i in await sse_items(resp, 1)] == [before["id"]]
        add_damaged(server)
        after = await publish(http, server.base, "after", [t])
        assert [i["id"] for i in await sse_items(resp, 1)] == [after["id"]]
    status, body = await get_json(http, f"{server.base}/v1/items", params={"after": before["id"]})
    assert status == 200 and [i["id"] for i in body["items"]] == [after["id"]]
