"""Batched frames (``/v1/ws?batch=1``): several items to a frame, one message per line.

A connection that asks for them gets each write's items as few text frames
whose lines are exactly the messages a connection without batches gets, one
per frame. Pure frame building, the hub with fake transports, then real
sockets: a replay, the live path, text with newlines, a bad value, and the
subscriber library (which asks for batches by default).
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import InvalidStatus

import subscriber
from tests.conftest import Server
from tests.support import own_tag, parse_frames, post, publish
from tests.test_fanout import FakeTransport, drained, entry
from tests.test_gateway import WAIT, refused
from wire.core import frames
from wire.core.entitlements import Grant
from wire.core.entry import Entry
from wire.gateway.hub import Conn, Hub

# --- frames (pure) ------------------------------------------------------------


def messages(frame_bytes: bytes) -> list[list[bytes]]:
    """Each text frame's lines."""
    return [payload.split(b"\n") for op, payload in parse_frames(frame_bytes) if op == 1]


def test_a_batch_is_one_frame_whose_lines_are_the_single_frames_messages() -> None:
    items = [frames.item_message(b'{"id":"1-%d","body":"a\\nb"}' % i) for i in range(3)]
    batch = frames.ws_batch([frames.ws_frame(m) for m in items])
    assert messages(batch) == [items]
    assert [orjson.loads(line)["item"]["body"] for line in items] == ["a\nb"] * 3


def test_batches_stay_under_the_byte_cap_and_a_large_item_goes_alone() -> None:
    small = [frames.item_message(b'"%d%s"' % (i, b"x" * 100_000)) for i in range(7)]
    large = frames.item_message(b'"' + b"y" * (frames.BATCH_BYTES + 10) + b'"')
    sent = [*small[:3], large, *small[3:]]
    got = messages(frames.ws_batch([frames.ws_frame(m) for m in sent]))
    assert [line for frame in got for line in frame] == sent  # all, in order
    assert [large] in got
    for frame in got:
        if frame != [large]:
            assert sum(len(line) + 1 for line in frame) - 1 <= frames.BATCH_BYTES
    assert len(got) == 5  # 100 KB messages two to a frame: 2, 1, large, 2, 2


def test_a_frame_holds_exactly_batch_bytes_of_messages_and_not_one_byte_more() -> None:
    def message(size: int) -> bytes:
        return frames.item_message(b'"' + b"m" * (size - len(frames.item_message(b'""'))) + b'"')

    half = frames.BATCH_BYTES // 2
    fits = [message(half), message(frames.BATCH_BYTES - half - 1)]  # with the newline: the cap
    assert messages(frames.ws_batch([frames.ws_frame(m) for m in fits])) == [fits]
    over = [message(half), message(frames.BATCH_BYTES - half)]
    assert messages(frames.ws_batch([frames.ws_frame(m) for m in over])) == [[m] for m in over]
    whole = message(frames.BATCH_BYTES)
    sent = [whole, fits[0], whole]
    assert messages(frames.ws_batch([frames.ws_frame(m) for m in sent])) == [[m] for m in sent]


def test_a_frame_past_65535_bytes_keeps_its_payload() -> None:
    payload = b"z" * 70_000
    assert bytes(frames.payload_of(frames.ws_frame(payload))) == payload
    assert bytes(frames.payload_of(frames.ws_frame(b"short"))) == b"short"
    assert bytes(frames.payload_of(frames.ws_frame(b"m" * 300))) == b"m" * 300


# --- the hub (fake transports) ----------------------------------------------------


def test_the_hub_writes_a_batch_connection_one_frame_per_dispatch() -> None:
    hub = Hub()
    batched, plain = FakeTransport(), FakeTransport()
    for transport, batch in ((batched, True), (plain, False)):
        conn = Conn(transport, batch=batch)
        hub.attach(conn)
        hub.retag(conn, frozenset({"world"}))
    hub.dispatch([entry("world") for _ in range(3)])
    hub.dispatch([entry("world")])
    singles = [payload for _, payload in plain.read()]
    assert len(singles) == 4
    assert messages(bytes(batched.unread)) == [singles[:3], singles[3:]]


def withdrawal(guid: str, *tags: str) -> Entry:
    """A kill notice carrying the tags of every version of its story."""
    after = entry("x")  # only for a fresh id
    item = {"id": after.id, "guid": guid, "version": 2, "pubstatus": "canceled", "tags": tags}
    return Entry(after.id, tags, 5, guid, orjson.dumps(item), withdrawal=True)


async def test_a_granted_batch_connection_gets_narrowed_withdrawals_and_large_items_intact() -> (
    None
):
    """Per-grant frames (a withdrawal's tags narrowed) and items past 64 KiB (a 64-bit
    length header) come through a batch line for line as a plain connection gets them."""
    hub = Hub()
    grant = Grant(frozenset({"world"}), name="partner")
    got: dict[bool, FakeTransport] = {}
    for batch in (True, False):
        conn = Conn(transport := FakeTransport(), batch=batch, grant=grant)
        hub.attach(conn)
        hub.retag(conn, frozenset({"world"}))
        got[batch] = transport
    sent = [entry("world"), withdrawal("g-kill", "secret", "world"), entry("world", size=70_000)]
    sent.append(entry("world"))
    hub.dispatch(sent)
    singles = [payload for _, payload in got[False].read()]
    assert messages(bytes(got[True].unread)) == [singles]
    kill = orjson.loads(singles[1])["item"]
    assert kill["tags"] == ["world"] and len(singles[2]) > 70_000


async def test_an_urgent_item_overtakes_a_batch_connections_backlog_in_a_frame_of_its_own() -> (
    None
):
    hub = Hub()
    conn = Conn(transport := FakeTransport(), batch=True)
    hub.attach(conn)
    hub.retag(conn, frozenset({"world"}))
    hub.dispatch([first := entry("world", size=70_000)])  # the socket is behind
    queued = [entry("world"), entry("world")]
    flash = entry("world", urgency=1)
    hub.dispatch(queued)  # queued by the hub
    hub.dispatch([flash])
    got = messages(bytes(transport.unread))
    transport.unread.clear()
    assert [[orjson.loads(m)["item"]["id"] for m in f] for f in got] == [[first.id], [flash.id]]
    assert orjson.loads(got[1][0])["ahead"] is True
    await drained(hub, conn)
    rest = messages(bytes(transport.unread))
    assert [[orjson.loads(m)["item"]["id"] for m in f] for f in rest] == [[e.id for e in queued]]


def test_sse_ignores_batch() -> None:
    conn = Conn(FakeTransport(), sse=True, batch=True)
    assert not conn.batch


# --- real sockets -----------------------------------------------------------------



async def frames_until(url: str, count: int) -> list[list[dict[str, Any]]]:
    """Connect, then the item messages of each frame until ``count`` items came."""
    got: list[list[dict[str, Any]]] = []
    async with connect(url, proxy=None, open_timeout=WAIT) as ws:
        while sum(len(f) for f in got) < count:
            raw = await ws.recv(decode=False)
            lines = [orjson.loads(line) for line in raw.split(b"\n")]
            if lines[0]["type"] == "item":
                assert all(m["type"] == "item" for m in lines), lines
                got.append(lines)
    return got


async def test_a_replay_comes_in_one_frame_to_a_batch_connection(
    server: Server, http: aiohttp.ClientSession
) -> None:
    world = own_tag("batch")
    since = (await publish(http, server.base, tags=[world], title="before"))["id"]
    ids = [(await publish(http, server.base, tags=[world], title=str(i)))["id"] for i in range(20)]
    url = f"{server.ws}?tags={world}&since={since}"
    batched = await frames_until(url + "&batch=1", 20)
    plain = await frames_until(url, 20)
    assert [m["item"]["id"] for f in batched for m in f] == ids
    assert batched == [[m for f in plain for m in f]]  # the same messages, one frame
    assert len(plain) == 20


async def test_live_items_with_newlines_arrive_once_in_order(
    server: Server, http: aiohttp.ClientSession
) -> None:
    world = own_tag("batch")
    body = "first line\nsecond line\n\u2028third \\n \\"
    async with connect(f"{server.ws}?tags={world}&batch=true", proxy=None) as ws:
        assert orjson.loads(await ws.recv())["type"] == "subscribed"
        status, answer = await post(
            http, server.base, [{"title": str(i), "tags": [world], "body": body} for i in range(50)]
        )
        assert status == 200 and all(r["status"] == 201 for r in answer["results"]), answer
        ids = [r["item"]["id"] for r in answer["results"]]
        got: list[dict[str, Any]] = []
        while len(got) < 50:
            raw = await ws.recv(decode=False)
            got += [orjson.loads(line)["item"] for line in raw.split(b"\n")]
    assert [i["id"] for i in got] == ids
    assert {i["body"] for i in got} == {body}


@pytest.mark.parametrize("value", ["yes", "2", "", "1,1", "TRUE", "%FF", "%00", "1%0A"])
async def test_a_bad_batch_value_is_refused_with_a_400(server: Server, value: str) -> None:
    with pytest.raises(InvalidStatus) as info:
        async with connect(f"{server.ws}?tags=world&batch={value}", proxy=None):
            pass
    status, body = refused(info)
    assert status == 400 and body["error"]["field"] == "batch", body
    assert body["error"]["code"] == "invalid_field", body
    assert "batch must be 1 or 0" in body["error"]["message"], body


async def test_the_subscriber_library_yields_the_same_with_and_without_batches(
    server: Server, http: aiohttp.ClientSession
) -> None:
    world = own_tag("batch")
    ids = [(await publish(http, server.base, tags=[world], title=str(i)))["id"] for i in range(30)]
    since = ids[0]
    seen: dict[bool, list[str]] = {}
    for batch in (True, False):
        async with subscriber.connect(server.ws, [world], since=since, batch=batch) as feed:
            seen[batch] = []
            async for event in feed:
                seen[batch].append(event.id)
                if event.id == ids[-1]:
                    break
    assert seen[True] == seen[False] == ids[1:]


async def test_batch_on_an_event_stream_is_ignored(
    server: Server, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{server.base}/v1/sse?tags=world&batch=yes") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")


async def test_the_library_resumes_after_the_last_line_of_a_batch_cut_off_by_a_close() -> None:
    """A connection lost right after a batch: every line of it is yielded, the next
    connection resumes after the last, and a replay overlapping it yields nothing twice."""
    subscribes: list[dict[str, Any]] = []

    def line(item_id: str) -> bytes:
        item = {"id": item_id, "guid": item_id, "version": 1, "title": item_id, "tags": ["world"]}
        item["published_at"] = "2024-06-01T10:00:00.000Z"
        return orjson.dumps({"type": "item", "item": item})

    async def handler(ws: ServerConnection) -> None:
        subscribes.append(orjson.loads(await ws.recv()))
        await ws.send(orjson.dumps({"type": "subscribed", "tags": ["world"], "position": "0-0"}))
        if len(subscribes) == 1:
            await ws.send(b"\n".join(line(i) for i in ("1-0", "2-0", "3-0")), text=True)
            await ws.close(1001, "going away")
            return
        await ws.send(b"\n".join(line(i) for i in ("2-0", "3-0", "4-0")), text=True)
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0) as peer:
        port = peer.sockets[0].getsockname()[1]
        url = f"ws://127.0.0.1:{port}/v1/ws"
        async with subscriber.connect(url, ["world"], min_delay=0.01, max_delay=0.1) as feed:
            async with asyncio.timeout(WAIT):
                got = [(await anext(feed)).id for _ in range(4)]
    assert got == ["1-0", "2-0", "3-0", "4-0"]
    assert subscribes[1]["since"] == "3-0"


def test_the_library_leaves_a_batch_the_url_names_alone() -> None:
    from subscriber.client import _with_query

    assert _with_query("ws://h:1/v1/ws", "batch=1") == "ws://h:1/v1/ws?batch=1"
    assert _with_query("ws://h:1/v1/ws?tags=a", "batch=1") == "ws://h:1/v1/ws?tags=a&batch=1"
    assert _with_query("ws://h:1/v1/ws?batch=0&tags=a", "batch=1") == "ws://h:1/v1/ws?batch=0&tags=a"
