"""The subscriber library against a hostile or broken gateway: a fake server on a
real socket that speaks the wire protocol badly (the subject is the client).

Each test states what the application must still get: every item once, in
order, or a clear exception, and never a hang.
"""

from __future__ import annotations

import asyncio
from http import HTTPStatus
from typing import Any

import orjson
import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

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


async def test_a_refusals_retry_after_is_waited_for_within_max_delay() -> None:
    """A gateway that answers the handshake 503 with ``Retry-After: 1`` is retried
    no sooner than it asked (the notice says so), then the feed goes on."""
    refusals = 0

    def busy_once(conn: ServerConnection, request: Request) -> Response | None:
        nonlocal refusals
        if refusals:
            return None
        refusals += 1
        response = conn.respond(HTTPStatus.SERVICE_UNAVAILABLE, "busy\n")
        response.headers["Retry-After"] = "1"
        return response

    async def handler(ws: ServerConnection) -> None:
        await ws.recv()
        await ws.send(SUBSCRIBED)
        await ws.send(item_message("1-0"))
        await ws.wait_closed()

    notices: list[subscriber.Notice] = []
    async with serve(handler, "127.0.0.1", 0, process_request=busy_once) as peer:
        port = peer.sockets[0].getsockname()[1]
        url = f"ws://127.0.0.1:{port}/v1/ws"
        options: dict[str, Any] = {"min_delay": 0.01, "max_delay": 5.0}
        async with subscriber.connect(url, ["world"], on_notice=notices.append, **options) as feed:
            assert await ids_until(feed, "1-0") == ["1-0"]
    waits = [n.retry_in for n in notices if isinstance(n, subscriber.Disconnected)]
    assert len(waits) == 1 and 1.0 <= waits[0] <= 5.0


async def test_items_ahead_that_never_come_in_order_are_bounded() -> None:
    """Urgent items sent ahead of their turn are remembered until their in-order
    copy comes; a server that sends more than MAX_AHEAD and never the copies gets
    a ProtocolError, not a set that grows without end."""
    from subscriber.client import MAX_AHEAD

    async def handler(ws: ServerConnection) -> None:
        await ws.recv()
        await ws.send(SUBSCRIBED)
        ahead = (item_message(f"{n}-0", ahead=True) for n in range(1, MAX_AHEAD + 2))
        await ws.send("\n".join(ahead))
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0, max_size=None) as peer:
        port = peer.sockets[0].getsockname()[1]
        url = f"ws://127.0.0.1:{port}/v1/ws"
        async with subscriber.connect(url, ["world"], **FAST) as feed:
            assert len(await ids_until(feed, f"{MAX_AHEAD}-0")) == MAX_AHEAD
            with pytest.raises(subscriber.ProtocolError, match="ahead of their turn"):
                await anext(feed)
