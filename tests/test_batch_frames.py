"""Batched frames (``/v1/ws?batch=1``): several items to a frame, one message per line.

A connection that asks for them gets each write's items as few text frames
whose lines are exactly the messages a connection without batches gets, one
per frame. Pure frame building, the hub with fake transports, then real
sockets: a replay, the live path, text with newlines, a bad value, and the
subscriber library (which asks for batches by default).
"""

from __future__ import annotations

import os
from typing import Any

import aiohttp
import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

import subscriber
from tests.conftest import Server
from tests.support import parse_frames, post, publish
from tests.test_fanout import FakeTransport, entry
from tests.test_gateway import WAIT, refused
from wire.core import frames
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


def test_sse_ignores_batch() -> None:
    conn = Conn(FakeTransport(), sse=True, batch=True)
    assert not conn.batch


# --- real sockets -----------------------------------------------------------------


def tag() -> str:
    return "batch-" + os.urandom(4).hex()


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
    world = tag()
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
    world = tag()
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


@pytest.mark.parametrize("value", ["yes", "2", "", "1,1"])
async def test_a_bad_batch_value_is_refused_with_a_400(server: Server, value: str) -> None:
    with pytest.raises(InvalidStatus) as info:
        async with connect(f"{server.ws}?tags=world&batch={value}", proxy=None):
            pass
    status, body = refused(info)
    assert status == 400 and body["error"]["field"] == "batch", body


async def test_the_subscriber_library_yields_the_same_with_and_without_batches(
    server: Server, http: aiohttp.ClientSession
) -> None:
    world = tag()
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
