"""A lean HTTP/1.1 keep-alive client for publishing from the benchmark.

aiohttp's client costs more CPU per request than the publisher it measures;
this one sends pre-built request bytes on a kept-alive connection and parses
just the status line, ``Content-Length`` and the body.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urlsplit

import orjson

from wire.core.ids import parse_id


class HttpConn(asyncio.Protocol):
    """One keep-alive connection; one request in flight at a time."""

    def __init__(self) -> None:
        self.buf = b""
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.transport: asyncio.Transport | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError(f"publisher connection lost: {exc}"))

    def data_received(self, data: bytes) -> None:
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = self.buf[:end].lower()
        at = head.find(b"content-length:")
        eol = head.find(b"\r\n", at)
        length = int(head[at + 15 : eol if eol >= 0 else len(head)]) if at >= 0 else 0
        if len(self.buf) < end + 4 + length:
            return
        status = int(self.buf[9:12])
        body = self.buf[end + 4 : end + 4 + length]
        self.buf = self.buf[end + 4 + length :]
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result((status, body))

    async def request(self, data: bytes) -> tuple[int, bytes]:
        if self.lost or self.transport is None or self.transport.is_closing():
            raise ConnectionError("publisher connection closed")
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return await self.waiter


class Slot:
    """A keep-alive connection that reconnects when the server has closed it.

    The publisher closes idle keep-alive connections; a request that finds its
    connection gone is sent again on a new one (every bench request carries an
    Idempotency-Key, so a repeat cannot publish twice).
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.proto: HttpConn | None = None

    async def connect(self) -> HttpConn:
        if self.proto is None or self.proto.lost:
            loop = asyncio.get_running_loop()
            _, self.proto = await loop.create_connection(HttpConn, self.host, self.port)
        return self.proto

    async def request(self, data: bytes) -> tuple[int, bytes]:
        try:
            return await (await self.connect()).request(data)
        except ConnectionError:
            self.proto = None
            return await (await self.connect()).request(data)

    def close(self) -> None:
        if self.proto is not None and self.proto.transport is not None:
            self.proto.transport.close()


@dataclass
class Published:
    """What a publishing run produced."""

    ids: list[str] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    started: int = 0
    finished: int = 0


class Poster:
    """``conns`` keep-alive connections to ``POST /v1/items``."""

    def __init__(self, url: str, token: str) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.token = token
        self.conns: list[Slot] = []
        self.seq = 0

    async def open(self, n: int) -> None:
        while len(self.conns) < n:
            slot = Slot(self.host, self.port)
            await slot.connect()
            self.conns.append(slot)

    def close(self) -> None:
        for c in self.conns:
            c.close()
        self.conns.clear()

    def build(self, item: dict[str, Any], idempotency_key: str | None) -> bytes:
        body = orjson.dumps(item)
        extra = f"Idempotency-Key: {idempotency_key}\r\n" if idempotency_key else ""
        head = (
            f"POST /v1/items HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Authorization: Bearer {self.token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{extra}\r\n"
        )
        return head.encode() + body

    async def publish(
        self,
        count: int,
        *,
        tag: str,
        conns: int,
        run: str,
        body: str | None = None,
        idempotency: bool = True,
        stamp: bool = True,
    ) -> Published:
        """Publish ``count`` items over ``conns`` connections as fast as they are accepted.

        ``ids`` come back in stream order (sorted), whatever order requests finished in.
        """
        await self.open(conns)
        out = Published(started=time.monotonic_ns())
        todo = iter(range(count))

        async def worker(conn: Slot) -> None:
            for _ in todo:
                await self._one(conn, out, tag, run, body, idempotency, stamp)

        await asyncio.gather(*(worker(c) for c in self.conns[:conns]))
        out.finished = time.monotonic_ns()
        out.ids.sort(key=parse_id)
        return out

    async def steady(
        self, count: int, rate: float, *, tag: str, run: str, body: str | None = None
    ) -> Published:
        """Publish ``count`` items at ``rate`` a second (on schedule, not after replies)."""
        await self.open(4)
        out = Published(started=time.monotonic_ns())
        free = list(self.conns)
        ready = asyncio.Condition()
        start = time.monotonic()
        tasks = []

        async def one(conn: Slot) -> None:
            try:
                await self._one(conn, out, tag, run, body, True, True)
            finally:
                async with ready:
                    free.append(conn)
                    ready.notify()

        for i in range(count):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            async with ready:
                while not free:
                    await ready.wait()
                conn = free.pop()
            tasks.append(asyncio.create_task(one(conn)))
        await asyncio.gather(*tasks)
        out.finished = time.monotonic_ns()
        out.ids.sort(key=parse_id)
        return out

    async def _one(
        self,
        conn: Slot,
        out: Published,
        tag: str,
        run: str,
        body: str | None,
        idempotency: bool,
        stamp: bool,
    ) -> None:
        self.seq += 1
        seq = self.seq
        item: dict[str, Any] = {"title": f"bench {run} {seq}", "tags": [tag]}
        if body:
            item["body"] = body
        if stamp:
            item["subtitle"] = str(time.monotonic_ns())
        status, reply = await conn.request(
            self.build(item, f"{run}-{seq}" if idempotency else None)
        )
        out.statuses[status] = out.statuses.get(status, 0) + 1
        if status in (200, 201):
            out.ids.append(orjson.loads(reply)["item"]["id"])
        elif len(out.errors) < 5:
            out.errors.append(f"{status} {reply[:200].decode(errors='replace')}")


def sorted_ids(ids: Sequence[str]) -> list[str]:
    return sorted(ids, key=parse_id)
