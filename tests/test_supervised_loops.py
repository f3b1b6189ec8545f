"""One damaged stream entry, pending embargo or webhook must not end or wedge a loop.

The damage is written into Redis directly (the one fair place to: no API
writes it); everything else goes through the real interfaces. Each test then
checks that later good items still arrive, the damage is logged, and
``/readyz`` reports every task running.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import aiohttp
import pytest
import redis as sync_redis

from tests.conftest import Server, ServerFactory
from tests.support import (
    WEBHOOKS_FAST,
    Receiver,
    add_webhook,
    admin,
    eventually,
    get_json,
    own_tag,
    publish,
    sse_items,
    wait_for,
    webhook_control,
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


@asynccontextmanager
async def watching(
    http: Http, server: Server, t: str, *, everything: bool = False
) -> AsyncIterator[tuple[aiohttp.ClientResponse, dict[str, Any]]]:
    """An event stream on ``t`` (or on everything) that has received one item
    tagged ``t``: the stream, and that item (the stream exists in Redis by then)."""
    params = {} if everything else {"tags": t}
    async with http.get(f"{server.base}/v1/sse", params=params) as resp:
        assert resp.status == 200
        before = await publish(http, server.base, "before", [t])
        assert [i["id"] for i in await sse_items(resp, 1)] == [before["id"]]
        yield resp, before


async def test_the_gateway_reader_skips_a_damaged_entry_and_delivers_what_follows(
    server: Server, http: Http, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    t = own_tag("loop")
    await all_tasks_ready(http, server)
    async with watching(http, server, t) as (resp, _):
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
    t = own_tag("loop")
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
        t = own_tag("loop")
        await add_webhook(http, server, receiver.url, tags=[t])
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
    t = own_tag("loop")
    await all_tasks_ready(http, server)
    async with watching(http, server, t, everything=True) as (resp, before):
        add_damaged(server)
        after = await publish(http, server.base, "after", [t])
        assert [i["id"] for i in await sse_items(resp, 1)] == [after["id"]]
    status, body = await get_json(http, f"{server.base}/v1/items", params={"after": before["id"]})
    assert status == 200 and [i["id"] for i in body["items"]] == [after["id"]]


# --- damaged embargoes and webhooks --------------------------------------------------------

#: Damaged copies of a pending item, by guid: each lacks a field, holds a bad
#: one, or names a key of another type (the store's own keys, via wire.storage.keys).
EMBARGO_DAMAGE: dict[str, dict[str, Any]] = {
    "e-no-head": {"h": None},
    "e-bad-urgency": {"u": "urgent"},
    "e-ks-stream": {"ks": keys.STREAM},
    "e-kt-zset": {"kt": keys.EMBARGOES},
    "e-ki-zset": {"ki": keys.EMBARGOES},
    "e-kx-zset": {"kx": keys.EMBARGOES},
    "e-ko-zset": {"ko": keys.EMBARGOES},
}


def add_damaged_embargoes(server: Server, good: str) -> list[str]:
    """Schedule damaged copies of the pending item of ``good`` at its due time, and
    a member naming a key that is not a hash; answer what their log lines name."""
    with sync_redis.Redis.from_url(server.settings.redis_url or "") as r:
        fields: dict[Any, Any] = r.hgetall(keys.embargo(good))
        due = r.zscore(keys.EMBARGOES, keys.embargo(good))
        named = []
        for guid, damage in EMBARGO_DAMAGE.items():
            own = {
                "g": guid, "ks": keys.story(guid), "kt": keys.story_tags(guid),
                "ki": keys.story_ids(guid), "kx": "", "ko": "",
            }
            copy = {k.decode(): v for k, v in fields.items()} | own | damage
            r.hset(keys.embargo(guid), mapping={k: v for k, v in copy.items() if v is not None})
            r.zadd(keys.EMBARGOES, {keys.embargo(guid): due})
            named.append(keys.embargo(guid) if {"h", "u"} & set(damage) else guid)
        r.set(keys.embargo("e-string"), "not a hash")
        r.zadd(keys.EMBARGOES, {keys.embargo("e-string"): due})
        return [*named, keys.embargo("e-string")]


async def test_a_due_embargo_is_released_past_damaged_ones_due_with_it(
    server: Server, http: Http, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    t = own_tag("loop")
    await all_tasks_ready(http, server)
    # The stream exists, so a damaged item naming it finds a stream, not nothing.
    async with watching(http, server, t) as (resp, before):
        due = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
        await publish(http, server.base, "held", [t], guid="e-good", embargo_until=due)
        named = add_damaged_embargoes(server, "e-good")
        assert [i["guid"] for i in await sse_items(resp, 1)] == ["e-good"]
    await wait_for(lambda: logged(caplog, named), "every damaged embargo to be logged", 5)
    with sync_redis.Redis.from_url(server.settings.redis_url or "") as r:
        released = [f[b"g"].decode() for _, f in r.xrange(keys.STREAM)]
    assert released == [before["guid"], "e-good"]  # no damaged item made it into the stream
    await all_tasks_ready(http, server)


#: What damages each webhook hash (None: the field removed).
WEBHOOK_DAMAGE: dict[str, dict[str, Any]] = {
    "bad-cursor": {"cursor": "yesterday"},
    "bad-url": {"url": "not a url"},
    "no-secret": {"secret": None},
    "bad-tags": {"tags": b"\xff\xfe"},
}


async def add_damaged_webhook(http: Http, server: Server, url: str, t: str, name: str) -> str:
    """A webhook damaged while paused (so no deliverer holds what it read before)."""
    webhook_id: str = (await add_webhook(http, server, url, tags=[t]))["id"]
    await webhook_control(http, server, webhook_id, "pause")
    with sync_redis.Redis.from_url(server.settings.redis_url or "") as r:
        for field, value in WEBHOOK_DAMAGE[name].items():
            if value is None:
                r.hdel(keys.webhook(webhook_id), field)
            else:
                r.hset(keys.webhook(webhook_id), field, value)
    await webhook_control(http, server, webhook_id, "resume")
    return webhook_id


async def test_a_webhook_is_delivered_next_to_damaged_ones_which_are_reported(
    make_server: ServerFactory, http: Http, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    receiver = await Receiver().start()
    try:
        server = await make_server(**WEBHOOKS_FAST)
        t = own_tag("loop")
        await add_webhook(http, server, receiver.url, tags=[t])
        damaged = {
            name: await add_damaged_webhook(http, server, receiver.url, t, name)
            for name in WEBHOOK_DAMAGE
        }
        first = await publish(http, server.base, "first", [t])
        await wait_for(lambda: len(receiver.ok()) >= 1, "the first delivery")
        second = await publish(http, server.base, "second", [t])
        await wait_for(lambda: len(receiver.ok()) >= 2, "the second delivery", 8)
        assert receiver.ok_ids() == [first["id"], second["id"]]
    finally:
        await receiver.stop()
    for name, webhook_id in damaged.items():
        # Damaged: shown as such at once; a bad url: once its first attempt is refused.
        url = f"{server.base}/v1/webhooks/{webhook_id}"
        await eventually(
            partial(get_json, http, url, headers=admin()),
            lambda got: got[0] == 200
            and (got[1]["webhook"]["status"] == "damaged" or bool(got[1]["webhook"]["last_error"])),
            f"the {name} webhook to be reported",
            within=5,
        )
    status, body = await get_json(http, server.base + "/v1/webhooks", headers=admin())
    assert status == 200 and len(body["webhooks"]) == 1 + len(damaged), body
    ready = await all_tasks_ready(http, server)
    assert ready["checks"]["task:webhooks"] is True


def _received(receiver: Receiver) -> bool:
    return len(receiver.ok()) >= 1


async def test_webhooks_are_delivered_whatever_order_a_non_hash_webhook_key_comes_in(
    make_server: ServerFactory, http: Http
) -> None:
    """A webhook's key overwritten with a string (Redis data written by hand): the
    deliverer's round took the webhooks in the set's order and stopped at it, so
    every webhook after it waited forever. Several good webhooks, so that some
    come after it."""
    receivers = [await Receiver().start() for _ in range(4)]
    try:
        server = await make_server(**WEBHOOKS_FAST)
        t = own_tag("loop")
        broken = (await add_webhook(http, server, receivers[0].url, tags=[t]))["id"]
        await webhook_control(http, server, broken, "pause")
        with sync_redis.Redis.from_url(server.settings.redis_url or "") as r:
            r.delete(keys.webhook(broken))
            r.set(keys.webhook(broken), "not a hash")
        for receiver in receivers:
            await add_webhook(http, server, receiver.url, tags=[t])
        sent = await publish(http, server.base, "to every good webhook", [t])
        for n, receiver in enumerate(receivers):
            await wait_for(partial(_received, receiver), f"delivery to webhook {n}", 8)
            assert receiver.ok_ids() == [sent["id"]]
    finally:
        for receiver in receivers:
            await receiver.stop()
    status, body = await get_json(http, server.base + "/v1/webhooks", headers=admin())
    assert status == 200, body
    shown = {w["id"]: w["status"] for w in body["webhooks"]}
    assert shown[broken] == "damaged" and len(shown) == 1 + len(receivers)
    url = f"{server.base}/v1/webhooks/{broken}"
    status, body = await get_json(http, url, headers=admin())
    assert (status, body["webhook"]["status"]) == (200, "damaged")
    for op in ("pause", "resume", "rotate-secret"):
        async with http.post(f"{url}/{op}", headers=admin()) as resp:
            error = (await resp.json())["error"]
            assert (resp.status, error["code"]) == (409, "webhook_damaged"), error
            assert "delete it" in error["message"]
    async with http.delete(url, headers=admin()) as resp:
        assert resp.status == 200
    status, body = await get_json(http, server.base + "/v1/webhooks", headers=admin())
    assert broken not in {w["id"] for w in body["webhooks"]}


@pytest.mark.parametrize("lease", ["a string", "a hash"])
async def test_a_lease_key_no_deliverer_wrote_does_not_hold_a_webhook_forever(
    make_server: ServerFactory, http: Http, lease: str
) -> None:
    """A webhook's lease key written by hand with no expiry (a string, or another
    type): every lease wire writes expires, but the deliverers' ``SET NX`` found the
    key there and never took the webhook, which showed ``active`` and got nothing."""
    receiver = await Receiver().start()
    try:
        server = await make_server(**WEBHOOKS_FAST)
        t = own_tag("loop")
        webhook_id = (await add_webhook(http, server, receiver.url, tags=[t]))["id"]
        await webhook_control(http, server, webhook_id, "pause")
        with sync_redis.Redis.from_url(server.settings.redis_url or "") as r:
            if lease == "a string":
                r.set(keys.webhook_lease(webhook_id), "someone")
            else:
                r.hset(keys.webhook_lease(webhook_id), "holder", "someone")
        await webhook_control(http, server, webhook_id, "resume")
        sent = await publish(http, server.base, "after the lease key", [t])
        await wait_for(partial(_received, receiver), "the delivery")
        assert receiver.ok_ids() == [sent["id"]]
    finally:
        await receiver.stop()
