"""Urgency: on a connection that is behind, a flash overtakes queued items
without breaking exactly-once delivery or the resume cursor."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
from typing import Any

import aiohttp
import orjson
import websockets

from tests.conftest import ServerFactory
from tests.support import item, post


async def raw_ws(port: int, path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A WebSocket client that reads only when told to, with a tiny receive buffer."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=32 * 1024)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    assert b" 101 " in await reader.readuntil(b"\r\n\r\n")
    return reader, writer


async def read_message(reader: asyncio.StreamReader) -> dict[str, Any]:
    """One unmasked server text frame."""
    head = await reader.readexactly(2)
    size = head[1] & 0x7F
    if size == 126:
        size = int.from_bytes(await reader.readexactly(2), "big")
    elif size == 127:
        size = int.from_bytes(await reader.readexactly(8), "big")
    msg: dict[str, Any] = orjson.loads(await reader.readexactly(size))
    return msg


async def test_flash_overtakes_queued_items_on_a_lagging_connection(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    # A cap high enough that only the queue, not the slow-consumer close, is tested.
    server = await make_server(max_buffer=64 * 1024 * 1024)
    reader, writer = await raw_ws(server.settings.port, "/v1/ws?tags=world")
    assert (await read_message(reader))["type"] == "subscribed"
    body = "x" * 16_000
    routine = [
        (await post(http, server.base, item(f"R{i}", body=body)))[1]["item"]["id"]
        for i in range(300)
    ]
    # Wait (on Redis, not the clock) until the gateway has read everything.
    async with websockets.connect(server.ws + "?tags=world&backfill=1") as probe:
        while True:
            msg = orjson.loads(await probe.recv())
            if msg["type"] == "item" and msg["item"]["id"] == routine[-1]:
                break
        _, flash = await post(http, server.base, item("FLASH", urgency=1))
        while orjson.loads(await probe.recv()).get("item", {}).get("id") != flash["item"]["id"]:
            pass
    got: list[dict[str, Any]] = []
    while len(got) < 301:
        got.append(await read_message(reader))
    writer.close()
    ids = [m["item"]["id"] for m in got]
    assert sorted(ids, key=lambda i: tuple(map(int, i.split("-")))) == [
        *routine,
        flash["item"]["id"],
    ]
    assert len(set(ids)) == 301, "nothing twice"
    at = ids.index(flash["item"]["id"])
    assert at < 300, "the flash went ahead of queued routine items"
    assert got[at].get("ahead") is True
    assert all("ahead" not in m for i, m in enumerate(got) if i != at)
