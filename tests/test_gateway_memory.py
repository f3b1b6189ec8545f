"""What an idle subscriber costs the gateway once its socket is handed to the hub.

The figures are the benchmark's (``wire bench --scenarios memory``,
docs/performance.md); these tests pin down the cuts behind them without
timing: the HTTP parser is gone from an upgraded connection, the handler's
chain of suspended frames stays short, and the bytes allocated per connection
(tracemalloc, the clients in another process) stay under a generous bound.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import tracemalloc
import types
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

from aiohttp import web_protocol

from tests.conftest import Server

#: Subscribers opened first (one-off allocations: caches, pools) and then measured.
WARM, MEASURED = 20, 200
#: Python bytes per idle WebSocket subscriber. Measured 12.3 KB with this file
#: alone and 13.7 KB when collected with tests/test_gateway_units.py (importing
#: ``aiohttp.test_utils`` in the session adds ~1.4 KB per connection here, not
#: yet explained); about 15 KB before the parser, a middleware and ``async for``
#: went. The bound leaves room for that and for library versions; the checks
#: below catch each cut coming back on their own.
MAX_BYTES_PER_CONN = 14_500
#: aiohttp's ``_handle_request``, ``_handle`` and current-app middleware (``impl``),
#: then ``request_log``, ``ws_handler`` and ``receive``; there were 8 (with
#: ``error_middleware`` and ``__anext__``). Each is ~250-300 bytes for the
#: connection's lifetime.
MAX_FRAMES = 6

# A subscriber client in its own process, so that only the gateway's memory is
# measured: opens the connections it is told to on stdin, says "ok" when every
# one has its ``subscribed``, and keeps them open until stdin closes.
CLIENT = r"""
import asyncio, sys

async def one(port):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"GET /v1/ws?tags=memory HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: d2lyZS1tZW1vcnkta2V5MQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"
    )
    got = b""
    while b'"subscribed"' not in got:
        data = await reader.read(4096)
        if not data:
            raise SystemExit(f"closed: {got!r}")
        got += data
    return writer

async def main():
    port, kept = int(sys.argv[1]), []
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        kept += await asyncio.gather(*(one(port) for _ in range(int(line))))
        print("ok", flush=True)

asyncio.run(main())
"""


class Clients:
    """The subscriber process: ``open(n)`` returns once n more are subscribed."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def open(self, n: int) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(b"%d\n" % n)
        await self.proc.stdin.drain()
        line = await asyncio.wait_for(self.proc.stdout.readline(), 60)
        assert line == b"ok\n", line


@asynccontextmanager
async def clients(server: Server) -> AsyncIterator[Clients]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CLIENT,
        str(server.settings.port),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        yield Clients(proc)
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.kill()
        await proc.wait()


@contextmanager
def traced() -> Iterator[None]:
    tracemalloc.start(1)
    try:
        yield
    finally:
        tracemalloc.stop()


def allocated() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


def frames(task: asyncio.Task[object]) -> list[str]:
    """The names of the Python coroutines ``task`` is suspended in, outermost first."""
    names: list[str] = []
    awaited: object = task.get_coro()
    while isinstance(awaited, types.CoroutineType):
        names.append(awaited.cr_code.co_name)
        awaited = awaited.cr_await
    return names


async def test_an_idle_websocket_subscriber_keeps_little_after_the_hand_over(
    server: Server,
) -> None:
    async with clients(server) as subscribers:
        with traced():
            await subscribers.open(WARM)
            before = allocated()
            await subscribers.open(MEASURED)
            per_conn = (allocated() - before) / MEASURED
        handlers = [o for o in gc.get_objects() if isinstance(o, web_protocol.RequestHandler)]
        # This server's subscribers (other tests' connections may not be collected yet).
        upgraded = [h for h in handlers if h._upgraded and h._manager is server.runner.server]
        chains = [f for t in asyncio.all_tasks() if "ws_handler" in (f := frames(t))]

    assert per_conn < MAX_BYTES_PER_CONN, f"{per_conn:.0f} bytes per connection"
    # The HTTP parser and its request queue are dropped at the hand-over.
    assert len(upgraded) >= WARM + MEASURED
    assert all(h._parser is None and not h._messages for h in upgraded)
    assert len(chains) >= WARM + MEASURED
    assert all(len(chain) <= MAX_FRAMES for chain in chains), chains[0]
