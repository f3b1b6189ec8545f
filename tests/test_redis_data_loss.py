"""Redis loses its data: a client resuming from an item it saw is told so.

A Redis restarted without persistence (or a failover to an empty replica)
comes back with no stream; the wire goes on publishing into a new one, whose
ids are later than every id of the old (they are times). A client that
resumes from an item of the old stream used to get the new items without a
word about those lost in between. Now every read from such a cursor says
``history_truncated``, up to just before the new stream's first item, as for
what retention removed; a read from the very start (0-0) lost nothing it
knew of, and is not told. Real Redis, restarted; real sockets.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
import pytest

from tests.conftest import ServerFactory
from tests.support import (
    WEBHOOKS_FAST,
    Receiver,
    RedisServer,
    add_webhook,
    eventually,
    get_json,
    own_tag,
    publish,
    sse_events,
    wait_for,
    webhook_state,
)
from wire.core.ids import format_id, parse_id, preceding
from wire.storage import keys

pytestmark = pytest.mark.fault  # restarts the Redis it runs on



async def ws_messages(url: str, count: int) -> list[dict[str, Any]]:
    """The first ``count`` messages of a WebSocket subscription."""
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        return [await ws.receive_json(timeout=10) for _ in range(count)]


async def test_a_cursor_from_before_redis_lost_its_data_is_told_history_truncated(
    make_server: ServerFactory, redis_server: RedisServer, http: aiohttp.ClientSession
) -> None:
    server = await make_server()
    news = own_tag("loss")
    before = [
        (await publish(http, server.base, tags=[news], title=f"before {i}"))["id"] for i in range(3)
    ]
    redis_server.stop()  # no persistence: everything is gone
    redis_server.start()
    await eventually(
        lambda: get_json(http, server.base + "/readyz"), lambda r: r[0] == 200, "ready again"
    )
    after = [
        (await publish(http, server.base, tags=[news], title=f"after {i}"))["id"] for i in range(2)
    ]
    assert parse_id(after[0]) > parse_id(before[-1]), "the new stream's ids are later"
    gone = format_id(preceding(parse_id(after[0])))
    told = f"items after {before[1]} up to {gone} are no longer kept"

    # WebSocket, resuming from the second item it saw.
    got = await ws_messages(f"{server.ws}?tags={news}&since={before[1]}", 4)
    assert [m["type"] for m in got] == ["subscribed", "error", "item", "item"], got
    assert got[1]["code"] == "history_truncated" and told in got[1]["message"]
    assert [m["item"]["id"] for m in got[2:]] == after
    # From the very start: everything kept, and nothing to tell.
    got = await ws_messages(f"{server.ws}?tags={news}&since=0-0", 3)
    assert [m["type"] for m in got] == ["subscribed", "item", "item"], got

    # An EventSource reconnecting with the last id it saw.
    url = f"{server.base}/v1/sse?tags={news}"
    async with http.get(url, headers={"Last-Event-ID": before[-1]}) as resp:
        events = await sse_events(resp, 4)
    assert [name for name, _ in events] == ["subscribed", "error", "item", "item"], events
    assert events[1][1]["code"] == "history_truncated"
    assert f"items after {before[-1]} up to {gone}" in events[1][1]["message"]
    assert [data["id"] for _, data in events[2:]] == after

    # A partner polling with the cursor of its last read.
    url = f"{server.base}/v1/items"
    status, body = await get_json(http, url, params={"after": before[0], "tags": news})
    assert status == 200, body
    assert body["history_truncated"] == [{"after": before[0], "upto": gone}]
    assert [i["id"] for i in body["items"]] == after
    status, body = await get_json(http, url, params={"after": "0-0", "tags": news})
    assert status == 200 and "history_truncated" not in body, body
    assert [i["id"] for i in body["items"]] == after
    status, body = await get_json(http, url, params={"after": after[0], "tags": news})
    assert status == 200 and body["items"][0]["id"] == after[1], "a cursor of the new stream"
    assert "history_truncated" not in body


async def test_a_webhook_whose_stream_was_lost_is_marked_history_truncated(
    make_server: ServerFactory, redis_server: RedisServer, http: aiohttp.ClientSession
) -> None:
    """The stream alone is gone (its key deleted; the webhook registry kept): the
    deliverer that takes the webhook up again says so, and goes on with what is kept."""
    receiver = await Receiver().start()
    try:
        server = await make_server(**WEBHOOKS_FAST)
        news = own_tag("loss")
        hook = (await add_webhook(http, server, receiver.url, tags=[news]))["id"]
        before = [(await publish(http, server.base, tags=[news], title="before"))["id"]]
        await wait_for(lambda: len(receiver.ok()) == 1, "the first delivery")
        await server.stop()  # its deliverer lets the webhook go
        with redis_server.client() as r:
            r.delete(keys.STREAM)
        server = await make_server(**WEBHOOKS_FAST)
        after = [(await publish(http, server.base, tags=[news], title="after"))["id"]]
        await wait_for(lambda: len(receiver.ok()) == 2, "the delivery after the loss")
        assert (await webhook_state(http, server, hook))["history_truncated"] is True
        delivered = [orjson.loads(b)["item"]["id"] for _, b in receiver.ok()]
        assert delivered == before + after
    finally:
        await receiver.stop()


async def test_a_client_that_subscribed_after_the_loss_is_told_nothing_when_it_resumes(
    make_server: ServerFactory, redis_server: RedisServer, http: aiohttp.ClientSession
) -> None:
    """The gateway lived through the loss: the position it gives is the new stream's,
    not the last id it had read of the lost one (from which a resume was told of a
    loss that happened before the client subscribed)."""
    server = await make_server()
    news = own_tag("loss")
    before = [(await publish(http, server.base, tags=[news], title="before"))["id"]]
    got = await ws_messages(f"{server.ws}?tags={news}", 1)
    assert got[0]["position"] == before[0], "the gateway had read the first stream"
    redis_server.stop()  # no persistence: everything is gone
    redis_server.start()
    await eventually(
        lambda: get_json(http, server.base + "/readyz"), lambda r: r[0] == 200, "ready again"
    )
    (subscribed,) = await ws_messages(f"{server.ws}?tags={news}", 1)
    position = subscribed["position"]
    assert parse_id(position) < parse_id(before[0]), "a position of the new, empty stream"
    after = (await publish(http, server.base, tags=[news], title="after"))["id"]
    got = await ws_messages(f"{server.ws}?tags={news}&since={position}", 2)
    assert [m["type"] for m in got] == ["subscribed", "item"], got
    assert got[1]["item"]["id"] == after
    status, body = await get_json(
        http, server.base + "/v1/items", params={"after": position, "tags": news}
    )
    assert status == 200 and "history_truncated" not in body, body
    assert [i["id"] for i in body["items"]] == [after]


async def test_a_reconnect_where_redis_refuses_xinfo_sends_nothing_again(
    make_server: ServerFactory, redis_server: RedisServer, http: aiohttp.ClientSession
) -> None:
    """An ACL that refuses XINFO says nothing of the stream: not a loss. (Taken for
    one, the reader started again at 0-0 and sent every kept item to the live
    connections as new.)"""
    from wire.gateway.reader import READER

    user = own_tag("noxinfo").replace("/", "-")
    with redis_server.client() as r:
        r.execute_command("ACL", "SETUSER", user, "on", ">pw", "~*", "&*", "+@all", "-xinfo")
    try:
        server = await make_server(redis_url=f"redis://{user}:pw@127.0.0.1:{redis_server.port}/0")
        news = own_tag("kept")
        for i in range(3):
            await publish(http, server.base, tags=[news], title=f"kept {i}")
        reader = server.app[READER]
        async with http.ws_connect(f"{server.ws}?tags={news}") as ws:
            assert (await ws.receive_json(timeout=10))["type"] == "subscribed"
            errors = reader.errors
            with redis_server.client() as r:
                r.client_kill_filter(_type="normal")  # the reader's connection among them
            await wait_for(lambda: reader.errors > errors and reader.ready, "the reader back")
            new = (await publish(http, server.base, tags=[news], title="new"))["id"]
            message = await ws.receive_json(timeout=10)
            assert message["type"] == "item" and message["item"]["id"] == new, message
    finally:
        with redis_server.client() as r:
            r.execute_command("ACL", "DELUSER", user)
