"""A first end-to-end check through the real interfaces."""

import aiohttp
import orjson
import websockets

from tests.conftest import Server
from tests.support import item, post


async def test_published_item_reaches_a_websocket_subscriber(
    server: Server, http: aiohttp.ClientSession
) -> None:
    async with websockets.connect(server.ws + "?tags=world") as ws:
        subscribed = orjson.loads(await ws.recv())
        assert subscribed["type"] == "subscribed" and subscribed["tags"] == ["world"]
        status, body = await post(http, server.base, item("Quake", ["world/asia"]))
        assert status == 201
        msg = orjson.loads(await ws.recv())
        assert msg == {"type": "item", "item": body["item"]}
