"""The fast-path baseline: a lean gateway written for speed and nothing else.

About sixty lines of what a fast fan-out needs: uvloop; one ``XREAD BLOCK``
reader that, after every read, lingers 2 ms and reads again before
dispatching (a burst goes out as few large writes); one prebuilt WebSocket
frame per item; one ``transport.write`` per connection per batch; tags
looked up in a dict. It speaks what the bench clients speak (the upgrade,
``subscribed``, item frames, ``since``) and is gapless and duplicate-free, so
it passes the same verification; it has no auth, limits, keep-alive,
slow-consumer handling or SSE. The product must beat it (issue 15).

Run: ``python -m wire.bench.fastpath --redis URL --port P``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import signal
from typing import Any
from urllib.parse import parse_qs, urlsplit

import redis.asyncio as aioredis

from wire.core.frames import item_message, ws_frame, ws_message
from wire.core.ids import StreamKey, format_id, parse_id
from wire.core.stored import with_id
from wire.core.tags import match_keys, normalize_tags
from wire.storage import keys

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
LINGER = 0.002
Row = tuple[StreamKey, bytes, frozenset[str]]


def rows(reply: Any) -> list[Row]:
    """Stream rows as (key, prebuilt frame, match keys)."""
    out = []
    for eid, f in reply:
        sid = eid.decode()
        frame = ws_frame(item_message(with_id(sid, f[b"j"])))
        out.append((parse_id(sid), frame, match_keys(f[b"t"].decode().split(" "))))
    return out


class Conn(asyncio.Protocol):
    """One connection: the upgrade, then only writes (client frames are ignored)."""

    def __init__(self, srv: Server) -> None:
        self.srv, self.buf, self.tags = srv, b"", frozenset[str]()
        self.last: StreamKey = (0, 0)
        self.held: list[Row] | None = None  # live rows while a ``since`` replay runs
        self.t: asyncio.Transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.tags or b"\r\n\r\n" not in self.buf + data:
            self.buf += b"" if self.tags else data
            return
        head, self.buf = (self.buf + data).split(b"\r\n\r\n", 1)[0], b""
        url = urlsplit(head.split(b" ", 2)[1].decode())
        if url.path == "/readyz":
            self.t.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            self.t.close()
            return
        key = next(
            v
            for k, _, v in (x.partition(b":") for x in head.split(b"\r\n"))
            if k.lower() == b"sec-websocket-key"
        ).strip()
        accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
        q = parse_qs(url.query)
        self.tags = frozenset(
            normalize_tags(q.get("tags", ["*"])[0].split(","), allow_wildcard=True)
        )
        self.t.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: "
            b"Upgrade\r\nSec-WebSocket-Accept: "
            + accept
            + b"\r\n\r\n"
            + ws_message({"type": "subscribed", "tags": sorted(self.tags)})
        )
        for tag in self.tags:
            self.srv.index.setdefault(tag, set()).add(self)
        if "since" in q:
            self.last, self.held = parse_id(q["since"][0]), []
            task = asyncio.ensure_future(self.replay())
            self.srv.tasks.add(task)
            task.add_done_callback(self.srv.tasks.discard)

    async def replay(self) -> None:
        start = "(" + format_id(self.last)
        async with self.srv.turns:  # redis-py's pool refuses past 100 commands in flight
            history = rows(await self.srv.redis.xrange(keys.STREAM, start, "+"))
        held, self.held = self.held or [], None
        out = [f for k, f, m in history + held if not self.tags.isdisjoint(m) and self.take(k)]
        self.t.write(b"".join(out))

    def take(self, key: StreamKey) -> bool:
        if key <= self.last:
            return False
        self.last = key
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        for tag in self.tags:
            self.srv.index[tag].discard(self)


class Server:
    def __init__(self, redis_url: str) -> None:
        self.redis = aioredis.Redis.from_url(redis_url, socket_timeout=30)
        self.index: dict[str, set[Conn]] = {}
        self.tasks: set[asyncio.Future[None]] = set()
        self.turns = asyncio.Semaphore(32)

    async def read(self) -> None:
        last: Any = await self.redis.xrevrange(keys.STREAM, count=1)
        pos = last[0][0] if last else b"0-0"
        while True:
            reply: Any = await self.redis.xread({keys.STREAM: pos}, count=1000, block=5000)
            if not reply:
                continue
            got = reply[0][1]
            await asyncio.sleep(LINGER)  # let more of a burst arrive
            more: Any = await self.redis.xread({keys.STREAM: got[-1][0]}, count=1000)
            got += more[0][1] if more else []
            pos = got[-1][0]
            self.dispatch(rows(got))

    def dispatch(self, batch: list[Row]) -> None:
        out: dict[Conn, list[bytes]] = {}
        for row in batch:
            for tag in row[2]:
                for c in self.index.get(tag, ()):
                    if c.held is not None:
                        c.held.append(row)
                    elif c.take(row[0]):
                        out.setdefault(c, []).append(row[1])
        for c, frames in out.items():
            c.t.write(b"".join(frames))


async def main(redis_url: str, host: str, port: int) -> None:
    srv = Server(redis_url)
    server = await asyncio.get_running_loop().create_server(
        lambda: Conn(srv), host, port, backlog=4096
    )
    reader = asyncio.ensure_future(srv.read())
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    reader.cancel()
    server.close()
    with contextlib.suppress(asyncio.CancelledError):
        await reader


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m wire.bench.fastpath")
    parser.add_argument("--redis", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    a = parser.parse_args()
    import uvloop

    uvloop.run(main(a.redis, a.host, a.port))
