"""The naive gateway the benchmark compares against.

What a first version of a WebSocket fan-out usually looks like: one reader
task, and for each item and each matching subscriber
``await ws.send_str(orjson.dumps(message).decode())``. It is correct (resume
with ``since`` is gapless and duplicate-free) so it passes the bench's
verification; it is slow for the reasons the real gateway avoids: the item is
serialized and framed once per subscriber, every send is a separate write and
an await, and one slow socket holds up everyone after it.

``--fault drop`` / ``--fault dup`` make the first subscriber lose (or receive
twice) its second live item: the bench's own test uses them to prove that its
verification catches a loss or a duplicate.

Run: ``python -m wire.bench.baseline --redis URL --port P``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
import signal
from typing import Any

import orjson
import redis.asyncio as aioredis
from aiohttp import WSMsgType, web

from wire.core.ids import format_id, parse_id
from wire.core.stored import with_id
from wire.core.tags import match_keys, normalize_tags
from wire.storage import keys

log = logging.getLogger("wire.bench.baseline")
SUBS = web.AppKey("subs", list["Subscriber"])
REDIS = web.AppKey("redis", aioredis.Redis)
FAULT = web.AppKey("fault", str)
NUMBERS = itertools.count()  # connection numbers: the fault modes pick the first


class Subscriber:
    """One connection: its tags, the last id sent, and whether it is live yet."""

    def __init__(self, ws: web.WebSocketResponse, tags: frozenset[str], number: int) -> None:
        self.ws = ws
        self.tags = tags
        self.number = number
        self.live = False
        self.last = (0, 0)
        self.pending: list[tuple[str, dict[str, Any], frozenset[str]]] = []
        self.sent_live = 0


async def send(sub: Subscriber, eid: str, item: dict[str, Any], fault: str) -> None:
    key = parse_id(eid)
    if key <= sub.last:
        return
    sub.last = key
    if sub.live and sub.number == 0 and fault:
        sub.sent_live += 1
        if sub.sent_live == 2 and fault == "drop":
            return
        if sub.sent_live == 2 and fault == "dup":
            await sub.ws.send_str(orjson.dumps({"type": "item", "item": item}).decode())
    await sub.ws.send_str(orjson.dumps({"type": "item", "item": item}).decode())


def decode(eid: bytes, fields: dict[bytes, bytes]) -> tuple[str, dict[str, Any], frozenset[str]]:
    sid = eid.decode()
    item = orjson.loads(with_id(sid, fields[b"j"]))
    return sid, item, match_keys(fields[b"t"].decode().split(" "))


async def reader(app: web.Application) -> None:
    redis, subs, fault = app[REDIS], app[SUBS], app[FAULT]
    last: Any = await redis.xrevrange(keys.STREAM, count=1)
    position = last[0][0].decode() if last else "0-0"
    while True:
        try:
            reply: Any = await redis.xread({keys.STREAM: position}, count=1000, block=5000)
        except (ConnectionError, TimeoutError, aioredis.RedisError) as err:
            log.warning("reader: %r; retrying", err)
            await asyncio.sleep(0.1)
            continue
        if not reply:
            continue
        for eid, fields in reply[0][1]:
            position = eid.decode()
            sid, item, match = decode(eid, fields)
            for sub in list(subs):
                if sub.tags.isdisjoint(match):
                    continue
                if not sub.live:
                    sub.pending.append((sid, item, match))
                    continue
                try:
                    await send(sub, sid, item, fault)
                except Exception as err:  # a closing socket must not stop the reader
                    log.debug("send failed: %r", err)


async def ws_handler(request: web.Request) -> web.WebSocketResponse:
    app = request.app
    tags = frozenset(normalize_tags(request.query.get("tags", "*").split(","), allow_wildcard=True))
    since = request.query.get("since")
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    sub = Subscriber(ws, tags, next(NUMBERS))
    if since is not None:
        sub.last = parse_id(since)
    app[SUBS].append(sub)
    try:
        await ws.send_str(orjson.dumps({"type": "subscribed", "tags": sorted(tags)}).decode())
        if since is not None:
            start = "(" + format_id(parse_id(since))
            rows: Any = await app[REDIS].xrange(keys.STREAM, start, "+")
            for eid, fields in rows:
                sid, item, match = decode(eid, fields)
                if not tags.isdisjoint(match):
                    await send(sub, sid, item, app[FAULT])
        while sub.pending:
            held, sub.pending = sub.pending, []
            for sid, item, _ in held:
                await send(sub, sid, item, app[FAULT])
        sub.live = True
        async for msg in ws:
            if msg.type == WSMsgType.ERROR:
                break
    finally:
        app[SUBS].remove(sub)
    return ws


async def _lifecycle(app: web.Application) -> Any:
    task = asyncio.create_task(reader(app))
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await app[REDIS].aclose()


def create_app(redis_url: str, fault: str = "") -> web.Application:
    app = web.Application()
    pool = aioredis.BlockingConnectionPool.from_url(
        redis_url, max_connections=64, socket_timeout=30
    )
    app[REDIS] = aioredis.Redis.from_pool(pool)
    app[SUBS] = []
    app[FAULT] = fault
    app.router.add_get("/v1/ws", ws_handler)
    app.router.add_get("/readyz", lambda _: _ready())
    app.cleanup_ctx.append(_lifecycle)
    return app


async def _ready() -> web.Response:
    return web.json_response({"status": "ready"})


async def main(redis_url: str, host: str, port: int, fault: str) -> None:
    runner = web.AppRunner(create_app(redis_url, fault), shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, host, port, backlog=4096).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m wire.bench.baseline")
    parser.add_argument("--redis", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--fault", choices=["", "drop", "dup"], default="")
    a = parser.parse_args()
    asyncio.run(main(a.redis, a.host, a.port, a.fault))
