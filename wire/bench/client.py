"""The benchmark's subscribers: raw asyncio WebSocket clients that count frames.

Runs as a child process (``python -m wire.bench.client``) so the clients do not
share an event loop, or a core, with the orchestrator that publishes; the
orchestrator drives it with one JSON command per line on stdin and reads one
JSON reply per line on stdout (plus unsolicited progress events).

Each connection parses only frame headers: it counts item frames (and the
lines of a batched one, ``?batch=1``) and skips their payloads. A sampled
subset also decodes every item, to record its id
(order and duplicates are checked on those) and its publish->deliver latency
(the publisher puts ``time.monotonic_ns()`` at sending time into the item's
``subtitle``; CLOCK_MONOTONIC is shared by every process of the machine).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import sys
import time
from collections.abc import Callable
from typing import Any, cast

import orjson

ITEM_PREFIX = b'{"type":"item"'
SUBSCRIBED_PREFIX = b'{"type":"subscribed"'
ERROR_PREFIX = b'{"type":"error"'
HANDSHAKE, OPEN, CLOSED, RETRYING = 0, 1, 2, 3
TRY_AGAIN = 1013  # the server could not serve the replay now; the client is to retry
MAX_RETRIES = 5
MASK = b"\x00\x00\x00\x00"  # client frames must be masked; a zero mask is a valid mask

now_ns = time.monotonic_ns


class Group:
    """Connections opened by one ``connect`` command."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.conns: list[Sub] = []
        self.delivered = 0
        self.subscribed = 0
        self.failed = 0
        self.first_rx = 0
        self.last_rx = 0
        self.retries = 0
        self.errors: list[str] = []
        self.address: tuple[str, int, bytes] = ("", 0, b"")
        #: The connections asked for batched frames (one item message per line).
        self.batched = False

    def reset(self) -> None:
        self.delivered = 0
        self.first_rx = self.last_rx = 0
        for c in self.conns:
            c.count = 0
            if c.ids is not None:
                c.ids = []
                c.lat = []


class Sub(asyncio.Protocol):
    """One subscriber connection: handshake, then frame counting."""

    __slots__ = (
        "buf",
        "close_code",
        "count",
        "group",
        "ids",
        "lat",
        "ok",
        "ready",
        "retries",
        "state",
        "transport",
    )

    def __init__(self, group: Group, sampled: bool, ready: asyncio.Future[bool]) -> None:
        self.group = group
        self.state = HANDSHAKE
        self.buf = b""
        self.count = 0
        self.close_code: int | None = None
        self.ids: list[str] | None = [] if sampled else None
        self.lat: list[int] | None = [] if sampled else None
        self.ready: asyncio.Future[bool] | None = ready
        self.transport: asyncio.Transport | None = None
        self.ok = False  # subscribed at least once: it is expected to receive items
        self.retries = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.state == RETRYING:
            asyncio.get_running_loop().create_task(self._reconnect(0.05 * self.retries))
            return
        if self.state != CLOSED:
            self.state = CLOSED
            if self.close_code is None:
                self.close_code = 1006
        self._settle(False, "connection lost before subscribed")

    def _settle(self, ok: bool, why: str = "") -> None:
        ready, self.ready = self.ready, None
        if ready is not None and not ready.done():
            if ok:
                self.ok = True
                self.group.subscribed += 1
            else:
                self.group.failed += 1
                if len(self.group.errors) < 5:
                    self.group.errors.append(why)
            ready.set_result(ok)

    def data_received(self, data: bytes) -> None:
        if self.buf:
            data = self.buf + data
            self.buf = b""
        if self.state == HANDSHAKE:
            end = data.find(b"\r\n\r\n")
            if end < 0:
                self.buf = data
                return
            status = data[: data.find(b"\r\n")]
            if not status.startswith(b"HTTP/1.1 101"):
                self.state = CLOSED
                self._settle(
                    False, (status + b" " + data[end + 4 : end + 200]).decode(errors="replace")
                )
                if self.transport is not None:
                    self.transport.abort()
                return
            self.state = OPEN
            data = data[end + 4 :]
        self._frames(data)

    def _frames(self, data: bytes) -> None:
        pos, n, items = 0, len(data), 0
        sampled = self.ids is not None
        while n - pos >= 2:
            ln = data[pos + 1]  # server frames are never masked
            hdr = 2
            if ln >= 126:  # 16-bit or 64-bit length
                hdr = 4 if ln == 126 else 10
                if n - pos < hdr:
                    break
                ln = int.from_bytes(data[pos + 2 : pos + hdr], "big")
            end = pos + hdr + ln
            if end > n:
                break
            if data.startswith(ITEM_PREFIX, pos + hdr):
                if not self.group.batched:
                    items += 1
                    if sampled:
                        self._sample(data[pos + hdr : end])
                else:
                    items += self._batched(data, pos + hdr, end, sampled)
            else:
                self._control(data[pos] & 0x0F, data[pos + hdr : end])
            pos = end
        if pos < n:
            self.buf = data[pos:]
        if items:
            self._tally(items)

    def _batched(self, data: bytes, start: int, end: int, sampled: bool) -> int:
        """The items of a batched frame: one message per line."""
        if sampled:
            for message in data[start:end].split(b"\n"):
                self._sample(message)
        return 1 + data.count(b"\n", start, end)

    def _tally(self, items: int) -> None:
        self.count += items
        g = self.group
        g.delivered += items
        g.last_rx = now_ns()
        g.first_rx = g.first_rx or g.last_rx

    def _sample(self, payload: bytes) -> None:
        item = orjson.loads(payload)["item"]
        assert self.ids is not None and self.lat is not None
        self.ids.append(item["id"])
        sent = item.get("subtitle")
        if sent and sent.isdigit():
            self.lat.append((now_ns() - int(sent)) // 1000)

    def _control(self, opcode: int, payload: bytes) -> None:
        if opcode == 0x1:
            if payload.startswith(SUBSCRIBED_PREFIX):
                self._settle(True)
            elif payload.startswith(ERROR_PREFIX):
                self._settle(False, payload[:300].decode(errors="replace"))
        elif opcode == 0x9 and self.transport is not None:  # ping: answer with a masked pong
            self.transport.write(bytes((0x8A, 0x80 | len(payload))) + MASK + payload)
        elif opcode == 0x8:
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            if code == TRY_AGAIN and not self.count and self.retries < MAX_RETRIES:
                # As a real client would: reconnect with the same ``since``. Nothing
                # was received, so nothing can come twice. Counted, not a failure.
                self.retries += 1
                self.group.retries += 1
                self.state = RETRYING
            else:
                self.close_code = code
                self.state = CLOSED
                self._settle(False, f"closed {code} {payload[2:].decode(errors='replace')}")
            if self.transport is not None:
                self.transport.close()

    async def _reconnect(self, delay: float) -> None:
        await asyncio.sleep(delay)
        host, port, request = self.group.address
        self.state, self.buf = HANDSHAKE, b""
        try:
            await asyncio.get_running_loop().create_connection(lambda: self, host, port)
        except OSError:
            self.state, self.close_code = CLOSED, 1006
            return
        if self.transport is not None:
            self.transport.write(request)


class Worker:
    """The command loop of one client process."""

    def __init__(self) -> None:
        self.groups: dict[str, Group] = {}
        self.out = sys.stdout.buffer

    def emit(self, message: dict[str, Any]) -> None:
        self.out.write(orjson.dumps(message) + b"\n")
        self.out.flush()

    async def connect(
        self,
        group: str,
        host: str,
        port: int,
        path: str,
        n: int,
        sample: int,
        concurrency: int = 1000,
        within: float = 60.0,
    ) -> dict[str, Any]:
        g = self.groups.get(group) or Group(group)
        self.groups[group] = g
        loop = asyncio.get_running_loop()
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: d2lyZS1iZW5jaC1rZXkxMg==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        g.address = (host, port, request)
        g.batched = "batch=1" in path
        step = max(1, n // sample) if sample else 0
        gate = asyncio.Semaphore(concurrency)
        started = now_ns()

        async def one(i: int) -> None:
            async with gate:
                ready: asyncio.Future[bool] = loop.create_future()
                sub = Sub(g, bool(step) and i % step == 0 and i // step < sample, ready)
                g.conns.append(sub)
                try:
                    await loop.create_connection(lambda: sub, host, port)
                except OSError as err:
                    sub._settle(False, f"connect: {err}")
                    return
                assert sub.transport is not None
                sub.transport.write(request)
                await asyncio.wait([ready], timeout=within)
                sub._settle(False, "no subscribed message in time")

        await asyncio.gather(*(one(i) for i in range(n)))
        return {
            "subscribed": g.subscribed,
            "failed": g.failed,
            "errors": g.errors,
            "seconds": (now_ns() - started) / 1e9,
        }

    def reset(self, group: str) -> dict[str, Any]:
        self.groups[group].reset()
        return {}

    async def wait(
        self, group: str, expect: int, within: float, stall: float = 5.0
    ) -> dict[str, Any]:
        """Wait until every connection has ``expect`` items (or nothing moves)."""
        g = self.groups[group]
        target = expect * sum(1 for c in g.conns if c.ok)
        deadline = time.monotonic() + within
        last, moved = -1, time.monotonic()
        while g.delivered < target and time.monotonic() < deadline:
            if g.delivered != last:
                last, moved = g.delivered, time.monotonic()
            elif time.monotonic() - moved > stall:
                break
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.05 if g.delivered >= target else 0)  # let extras (dups) land
        return self.result(g, expect)

    def result(self, g: Group, expect: int) -> dict[str, Any]:
        counts = [c.count for c in g.conns if c.ok]
        closed: dict[str, int] = {}
        for c in g.conns:
            if c.close_code is not None:
                closed[str(c.close_code)] = closed.get(str(c.close_code), 0) + 1
        samples = [c for c in g.conns if c.ids is not None and c.ok]
        return {
            "conns": len(counts),
            "delivered": g.delivered,
            "short": sum(1 for k in counts if k < expect),
            "over": sum(1 for k in counts if k > expect),
            "min": min(counts, default=0),
            "max": max(counts, default=0),
            "closed": closed,
            "retries": g.retries,
            "first_rx": g.first_rx,
            "last_rx": g.last_rx,
            "sampled_ids": [c.ids for c in samples],
            "latency_us": [c.lat or [] for c in samples],
        }

    def close(self, group: str) -> dict[str, Any]:
        g = self.groups.pop(group, None)
        if g is not None:
            for c in g.conns:
                if c.transport is not None:
                    c.transport.abort()  # RST: no TIME_WAIT pile-up across scenarios
        return {}

    def progress(self) -> dict[str, Any]:
        return {
            "ev": "progress",
            "subscribed": sum(g.subscribed for g in self.groups.values()),
            "delivered": sum(g.delivered for g in self.groups.values()),
        }

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=1 << 24)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        ticker = asyncio.create_task(self._tick())
        tasks: set[asyncio.Task[None]] = set()
        while line := await reader.readline():
            task = asyncio.create_task(self._run(orjson.loads(line)))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        ticker.cancel()

    async def _tick(self) -> None:
        last: dict[str, Any] = {}
        while True:
            await asyncio.sleep(0.25)
            p = self.progress()
            if p != last:
                self.emit(p)
                last = p

    async def _run(self, cmd: dict[str, Any]) -> None:
        ops: dict[str, Callable[..., Any]] = {
            "connect": self.connect,
            "wait": self.wait,
            "reset": self.reset,
            "close": self.close,
        }
        op, rid, args = cmd["op"], cmd["id"], cmd.get("args", {})
        try:
            result = ops[op](**args)
            if asyncio.iscoroutine(result):
                result = await result
            self.emit({"id": rid, "result": result})
        except Exception as err:
            self.emit({"id": rid, "error": f"{type(err).__name__}: {err}"})


def main() -> None:
    # A measuring instrument must not pause: the cyclic collector would walk
    # every connection's objects now and then (100+ ms at 10,000), and these
    # short-lived processes make no garbage that needs it.
    gc.disable()
    if os.environ.get("WIRE_BENCH_CLIENT_UVLOOP", "1") == "1":
        with contextlib.suppress(ImportError):
            import uvloop

            uvloop.install()
    asyncio.run(Worker().serve())


if __name__ == "__main__":
    main()
