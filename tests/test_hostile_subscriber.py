"""The subscriber library against a hostile or broken gateway: a fake server on a
real socket that speaks the wire protocol badly (the subject is the client).

Each test states what the application must still get: every item once, in
order, or a clear exception, and never a hang.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from websockets.asyncio.server import ServerConnection, serve

import subscriber
from tests.support import item_message

FAST: dict[str, Any] = {"min_delay": 0.01, "max_delay": 0.05}
SUBSCRIBED = orjson.dumps({"type": "subscribed", "tags": ["world"]}).decode()


async def ids_until(feed: subscriber.Feed, last: str, within: float = 10.0) -> list[str]:
    """The ids the feed yields up to and including ``last``."""
    got: list[str] = []
    async with asyncio.timeout(within):
        while not got or got[-1] != last:
            got.append((await anext(feed)).id)
    return got


async def test_items_sent_before_the_answer_twice_across_a_reconnect_are_yielded_once() -> None:
    """Items that come before ``subscribed`` are kept; a second connection that sends
    them again (before its own answer) must not make them yielded twice."""
    connections = 0

    async def handler(ws: ServerConnection) -> None:
        nonlocal connections
        connections += 1
        await ws.recv()
        await ws.send(item_message("1-0"))
        await ws.send(item_message("2-0"))
        if connections == 1:
            await ws.close(1012, "service restart")  # before answering
            return
        await ws.send(SUBSCRIBED)
        await ws.send(item_message("3-0"))
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0) as peer:
        port = peer.sockets[0].getsockname()[1]
        url = f"ws://127.0.0.1:{port}/v1/ws"
        async with subscriber.connect(url, ["world"], **FAST) as feed:
            assert await ids_until(feed, "3-0") == ["1-0", "2-0", "3-0"]


async def test_blank_lines_in_a_frame_are_skipped_and_bad_json_is_a_protocol_error() -> None:
    """A trailing newline (the ndjson habit) or an empty line in a batched frame is
    framing, not a message; a frame that is not JSON raises ProtocolError, and an
    application that reads on gets the rest, once each."""

    async def handler(ws: ServerConnection) -> None:
        await ws.recv()
        await ws.send(SUBSCRIBED)
        await ws.send(item_message("1-0") + "\n")
        await ws.send(item_message("2-0") + "\n\n" + item_message("3-0") + "\r\n")
        await ws.send("{not json")
        await ws.send(item_message("3-0") + "\n" + item_message("4-0"))
        await ws.wait_closed()

    got: list[str] = []
    async with serve(handler, "127.0.0.1", 0) as peer:
        port = peer.sockets[0].getsockname()[1]
        url = f"ws://127.0.0.1:{port}/v1/ws"
        async with subscriber.connect(url, ["world"], **FAST) as feed:
            got += await ids_until(feed, "3-0")
            with pytest.raises(subscriber.ProtocolError, match="invalid JSON"):
                await anext(feed)
            got += await ids_until(feed, "4-0")
    assert got == ["1-0", "2-0", "3-0", "4-0"]
