"""What real partner systems answer a webhook, and what the wire must make of it.

Redirects (never followed: the target would escape the URL checks), 410 Gone,
429 with Retry-After, a receiver that never answers, one that answers 2xx
only after the timeout, one that hangs up mid-answer. Real loopback servers
(aiohttp, or raw asyncio sockets where HTTP must be broken), a real wire app,
a real Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import Server, ServerFactory
from tests.support import (
    WEBHOOKS_FAST,
    Receiver,
    add_webhook,
    admin,
    free_port,
    publish,
    wait_for,
    webhook_state,
)
from wire.web.webhooks import DELIVERER

FAST = WEBHOOKS_FAST


async def until(
    http: aiohttp.ClientSession, server: Server, webhook_id: str,
    check: Callable[[dict[str, Any]], bool], what: str,
) -> dict[str, Any]:
    """The webhook as shown once ``check`` accepts it (within 15 s)."""
    deadline = time.monotonic() + 15
    while not check(shown := await webhook_state(http, server, webhook_id)):
        assert time.monotonic() < deadline, f"timed out waiting for {what}: {shown}"
        await asyncio.sleep(0.02)
    return shown


@dataclass
class Answering(Receiver):
    """A receiver whose answers (status and headers) the test picks per request."""

    reply: Callable[[int], tuple[int, dict[str, str]]] = lambda n: (200, {})
    arrivals: list[float] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.arrivals.append(time.monotonic())
        status, headers = self.reply(len(self.requests))
        self.requests.append(({k.lower(): v for k, v in request.headers.items()}, b""))
        return web.Response(status=status, headers=headers)


@pytest.fixture
async def answering() -> AsyncIterator[Answering]:
    r = Answering()
    await r.start()
    yield r
    await r.stop()


async def test_a_redirect_is_not_followed_and_is_recorded_as_one(
    make_server: ServerFactory, http: aiohttp.ClientSession, answering: Answering
) -> None:
    """A 3xx pointing elsewhere (here another loopback server, standing for a host
    the URL checks would refuse) is a failure: nothing reaches the target, and
    ``last_error`` says it was a redirect and where to."""
    target = Receiver()
    await target.start()
    try:
        moved = True
        answering.reply = lambda n: (307, {"Location": target.url}) if moved else (200, {})
        server = await make_server(**FAST)
        webhook_id = (await add_webhook(http, server, answering.url, tags=["world"]))["id"]
        await publish(http, server.base, "redirected", ["world"])
        shown = await until(http, server, webhook_id, lambda s: s["last_status"] == 307, "a 307")
        await wait_for(lambda: len(answering.requests) >= 3, "retries")
        assert target.requests == []
        assert "redirect" in shown["last_error"] and target.url in shown["last_error"]
        assert shown["delivered"] == 0 and shown["status"] == "active"
        moved = False
        shown = await until(http, server, webhook_id, lambda s: s["delivered"] == 1, "delivery")
        assert target.requests == []
    finally:
        await target.stop()


async def test_410_gone_disables_the_webhook_at_once(
    make_server: ServerFactory, http: aiohttp.ClientSession, answering: Answering
) -> None:
    """Standard Webhooks: a 410 means the endpoint is gone; the sender should stop
    (not retry for 24 h). ``resume`` starts it again, from the same item."""
    gone = True
    answering.reply = lambda n: (410, {}) if gone else (200, {})
    server = await make_server(**FAST)
    webhook_id = (await add_webhook(http, server, answering.url, tags=["world"]))["id"]
    first = (await publish(http, server.base, "gone", ["world"]))["id"]
    shown = await until(http, server, webhook_id, lambda s: s["status"] != "active", "disabled")
    assert shown["status"] == "disabled" and shown["last_status"] == 410
    assert "410" in shown["last_error"] and "disabled" in shown["last_error"]
    await publish(http, server.base, "after", ["world"])
    deliverer_tasks = server.app[DELIVERER].tasks
    await wait_for(lambda: webhook_id not in deliverer_tasks, "the deliverer to let go")
    assert len(answering.requests) == 1
    gone = False
    async with http.post(f"{server.base}/v1/webhooks/{webhook_id}/resume", headers=admin()):
        pass
    await until(http, server, webhook_id, lambda s: s["delivered"] == 2, "delivery after resume")
    assert answering.requests[1][0]["webhook-id"] == first



async def test_429_with_retry_after_is_waited_for(
    make_server: ServerFactory, http: aiohttp.ClientSession, answering: Answering
) -> None:
    """A receiver shedding load says when to come back: the next attempt waits at
    least that long, whatever the (here 10 ms) backoff would have said."""
    answering.reply = lambda n: (429, {"Retry-After": "2"}) if n == 0 else (200, {})
    server = await make_server(**{**FAST, "webhook_backoff_max": 30.0})
    webhook_id = (await add_webhook(http, server, answering.url, tags=["world"]))["id"]
    await publish(http, server.base, "throttled", ["world"])
    shown = await until(http, server, webhook_id, lambda s: s["last_status"] == 429, "a 429")
    assert "Retry-After" in shown["last_error"]
    await until(http, server, webhook_id, lambda s: s["delivered"] == 1, "the delivery")
    assert len(answering.requests) == 2
    assert answering.arrivals[1] - answering.arrivals[0] >= 2.0


async def test_last_error_is_cleared_by_a_success(
    make_server: ServerFactory, http: aiohttp.ClientSession, answering: Answering
) -> None:
    """``last_error`` is the text of the last answer: after a 2xx there is none."""
    answering.reply = lambda n: (500, {}) if n < 2 else (200, {})
    server = await make_server(**FAST)
    webhook_id = (await add_webhook(http, server, answering.url, tags=["world"]))["id"]
    await publish(http, server.base, "recovered", ["world"])
    shown = await until(http, server, webhook_id, lambda s: s["delivered"] == 1, "the delivery")
    assert shown["last_status"] == 200 and shown["failing_since"] is None
    assert shown["last_error"] is None


@dataclass
class RawReceiver:
    """A TCP server speaking just enough HTTP to misbehave: each connection gets
    what ``answer`` (awaited with the request's webhook-id) writes, then is closed."""

    answer: Callable[[int, asyncio.StreamWriter], Awaitable[None]]
    port: int = field(default_factory=free_port)
    ids: list[str] = field(default_factory=list)
    server: asyncio.Server | None = None
    handlers: set[asyncio.Task[Any]] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode().split("\r\n")
            pairs = (line.split(": ", 1) for line in lines[1:] if ": " in line)
            fields = {k.lower(): v for k, v in pairs}
            await reader.readexactly(int(fields["content-length"]))
            self.ids.append(fields["webhook-id"])
            await self.answer(len(self.ids) - 1, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.handlers.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def start(self) -> RawReceiver:
        self.server = await asyncio.start_server(self.serve, "127.0.0.1", self.port)
        return self

    async def stop(self) -> None:
        """Close the listener and every connection still held (a silent answer's)."""
        if self.server is not None:
            self.server.close()
        for task in list(self.handlers):
            task.cancel()
        await asyncio.gather(*self.handlers, return_exceptions=True)
        if self.server is not None:
            await self.server.wait_closed()


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


async def test_a_receiver_that_never_answers_is_a_clear_timeout_then_delivery(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    """Accepts the connection, reads the request, says nothing: each attempt ends
    at WIRE_WEBHOOK_TIMEOUT with ``last_status`` 0 and an error that says so."""
    silent = True

    async def answer(n: int, writer: asyncio.StreamWriter) -> None:
        if silent:
            await asyncio.sleep(30)
        writer.write(OK)
        await writer.drain()

    receiver = await RawReceiver(answer).start()
    try:
        server = await make_server(**FAST, webhook_timeout=0.5)
        webhook_id = (await add_webhook(http, server, receiver.url, tags=["world"]))["id"]
        first = (await publish(http, server.base, "unanswered", ["world"]))["id"]
        shown = await until(
            http, server, webhook_id, lambda s: s["last_error"] is not None, "a failure"
        )
        assert shown["last_status"] == 0 and "timed out" in shown["last_error"], shown
        silent = False
        await until(http, server, webhook_id, lambda s: s["delivered"] == 1, "the delivery")
        assert set(receiver.ids) == {first}
    finally:
        await receiver.stop()


async def test_a_2xx_after_the_timeout_is_retried_with_the_same_webhook_id(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    """The receiver got the item but answered after the timeout: the wire cannot
    know, so it sends it again, with the same ``webhook-id`` (at-least-once, as
    docs/protocol.md says); once answered in time the cursor moves on."""
    slow = True

    async def answer(n: int, writer: asyncio.StreamWriter) -> None:
        if slow:
            await asyncio.sleep(1.0)
        writer.write(OK)
        await writer.drain()

    receiver = await RawReceiver(answer).start()
    try:
        server = await make_server(**FAST, webhook_timeout=0.3)
        webhook_id = (await add_webhook(http, server, receiver.url, tags=["world"]))["id"]
        first = (await publish(http, server.base, "late", ["world"]))["id"]
        await wait_for(lambda: len(receiver.ids) >= 2, "a repeat after the timeout")
        slow = False
        second = (await publish(http, server.base, "next", ["world"]))["id"]
        shown = await until(
            http, server, webhook_id, lambda s: s["cursor"] == second, "both delivered"
        )
        assert shown["last_error"] is None
        assert set(receiver.ids[:-1]) == {first} and receiver.ids[-1] == second
    finally:
        await receiver.stop()


async def test_a_receiver_that_hangs_up_mid_answer(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    """Hanging up before the status line is a failure (retried, same id); after a
    complete 2xx status line and headers, a body cut short is still a delivery."""

    async def answer(n: int, writer: asyncio.StreamWriter) -> None:
        if n == 0:
            writer.write(b"HTTP/1.1 2")  # and closed
        elif n >= 1:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"ok\": tr")
        await writer.drain()

    receiver = await RawReceiver(answer).start()
    try:
        server = await make_server(**FAST)
        webhook_id = (await add_webhook(http, server, receiver.url, tags=["world"]))["id"]
        first = (await publish(http, server.base, "cut", ["world"]))["id"]
        shown = await until(http, server, webhook_id, lambda s: s["delivered"] == 1, "delivery")
        assert receiver.ids == [first, first]
        assert shown["last_status"] == 200
        second = (await publish(http, server.base, "cut again", ["world"]))["id"]
        await until(http, server, webhook_id, lambda s: s["delivered"] == 2, "delivery")
        assert receiver.ids == [first, first, second]
    finally:
        await receiver.stop()
