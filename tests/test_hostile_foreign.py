"""The live feeds judged by clients the wire does not control.

An HTTP/1.0 client (a proxy left at nginx's default ``proxy_http_version``)
on the event stream, handshakes that are not WebSocket handshakes, and a
browser ``EventSource`` that meets the gateway's connection cap: each gets
an answer it can act on, never a 500 and never a feed that stops for good.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest
from playwright.async_api import Page

from tests.conftest import ServerFactory
from tests.support import (
    EDITOR_TOKEN,
    WireProcess,
    chromium,
    free_port,
    publish,
    sse_events,
    wait_for,
)
from wire.gateway.reader import HUB
from wire.web.listen import MAX_PEEKING, REFUSAL, ConnectionCap

WAIT = 15.0


async def exchange(port: int, request: bytes) -> tuple[bytes, bytes]:
    """Send a raw request; the response head and whatever body followed until EOF."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
        length = [
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        ]
        body = await asyncio.wait_for(reader.readexactly(length[0]), WAIT) if length else b""
        return head, body
    finally:
        writer.close()


def status_of(head: bytes) -> int:
    return int(head.split(b" ", 2)[1])


# ---- HTTP/1.0 on the event stream -----------------------------------------------


async def test_an_http_1_0_event_stream_request_is_a_clear_error_not_a_500(
    make_server: ServerFactory,
) -> None:
    """Chunked encoding does not exist in HTTP/1.0 and the stream has no end to
    give a length: aiohttp refused to prepare the response and the client got
    ``500 internal_error``. It is refused in JSON, naming the version to use."""
    server = await make_server()
    port = server.settings.port
    request = b"GET /v1/sse?tags=world HTTP/1.0\r\nHost: wire\r\n\r\n"
    head, body = await exchange(port, request)
    assert status_of(head) == 505, head
    error = orjson.loads(body)["error"]
    assert error["code"] == "http_version_not_supported", error
    assert "HTTP/1.1" in error["message"] and "proxy_http_version" in error["message"]
    assert b"Access-Control-Allow-Origin: *" in head  # a page can read it too
    # HEAD has no body to frame: it is still answered like a GET's headers.
    head, _ = await exchange(port, b"HEAD /v1/sse HTTP/1.0\r\nHost: wire\r\n\r\n")
    assert status_of(head) == 200 and b"text/event-stream" in head, head
    # HTTP/1.1 is unchanged.
    head11 = b"GET /v1/sse?tags=world HTTP/1.1\r\nHost: wire\r\nConnection: close\r\n\r\n"
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head11)
        got = await asyncio.wait_for(reader.readuntil(b"event: subscribed\n"), WAIT)
        assert got.startswith(b"HTTP/1.1 200 "), got
    finally:
        writer.close()
    await wait_for(lambda: not server.app[HUB].conns, "the stream to end")


# ---- an EventSource at the connection cap ---------------------------------------

OPEN_SOURCE = """() => {
  window.seen = [];
  window.source = new EventSource("/v1/sse?tags=world");
  source.onerror = () => seen.push("error " + source.readyState);
  source.addEventListener("subscribed", () => seen.push("subscribed"));
  source.addEventListener("item", (e) => seen.push("item " + e.lastEventId));
}"""


async def test_an_event_source_refused_at_the_connection_cap_comes_back_once_there_is_room(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    """A browser never retries a non-200 answer: the 503 at ``WIRE_MAX_CONNECTIONS``
    stopped a dashboard's feed for good (``readyState`` 2), though the gateway
    only needed it to come back later. An ``EventSource`` (``Accept:
    text/event-stream``) now gets a stream that says why and ends, with a
    longer ``retry:``; other clients still get the JSON 503."""
    server = await make_server(max_connections=1)
    async with chromium() as browser:
        page = await browser.new_page()
        await page.goto(server.base + "/healthz")
        async with http.get(server.base + "/v1/sse?tags=sport") as held:
            assert held.status == 200
            await sse_events(held, 1)  # subscribed: the one place is taken
            await page.evaluate(OPEN_SOURCE)
            await page.wait_for_function("window.seen.length > 0", timeout=WAIT * 1000)
            assert await page.evaluate("window.seen") == ["error 0"]  # to be retried
            async with http.get(
                server.base + "/v1/sse", headers={"Accept": "text/event-stream"}
            ) as refused:
                assert refused.status == 200
                assert refused.headers["Content-Type"] == "text/event-stream"
                text = (await asyncio.wait_for(refused.read(), WAIT)).decode()
            assert text.startswith("retry: ") and ": closed 1013 " in text, text
            async with http.get(server.base + "/v1/sse") as plain:
                assert plain.status == 503  # no Accept: the JSON refusal, as before
        await wait_for(lambda: not server.app[HUB].conns, "the held stream to end")
        await comes_back(page, http, server.base)


async def comes_back(page: Page, http: aiohttp.ClientSession, base: str) -> None:
    """The page's EventSource subscribes again and reads an item published now."""
    await page.wait_for_function("window.seen.includes('subscribed')", timeout=WAIT * 1000)
    item = (await publish(http, base, "Back", ["world"]))["id"]
    await page.wait_for_function(f"window.seen.includes('item {item}')", timeout=WAIT * 1000)
    assert await page.evaluate("window.source.readyState") == 1


# ---- an EventSource at the plain HTTP connection cap ------------------------------

CAP = 4
EVENT_SOURCE = (
    b"GET /v1/sse?tags=world HTTP/1.1\r\nHost: wire\r\nAccept: text/event-stream\r\n"
    b"Cache-Control: no-cache\r\nOrigin: https://dash.example\r\n\r\n"
)


async def until_closed(port: int, request: bytes | None) -> bytes:
    """Everything the server sends on a new connection (after ``request``) until it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        if request is not None:
            writer.write(request)
        return await asyncio.wait_for(reader.read(), WAIT)
    finally:
        writer.close()


@pytest.fixture
async def capped(redis_url: str) -> AsyncIterator[tuple[WireProcess, list[socket.socket]]]:
    """``wire run`` with a plain HTTP cap of CAP, and more idle connections than that."""
    proc = WireProcess(
        ["run", "--redis", redis_url],
        {"WIRE_EDITOR_TOKENS": EDITOR_TOKEN, "WIRE_MAX_HTTP_CONNECTIONS": str(CAP)},
        free_port(),
    ).start()
    try:
        await proc.ready()
        await asyncio.sleep(0)
        idle = [socket.create_connection(("127.0.0.1", proc.port)) for _ in range(CAP + 2)]
        try:
            yield proc, idle
        finally:
            for s in idle:
                s.close()
    finally:
        proc.kill()


async def test_an_event_source_over_the_http_connection_cap_is_told_to_come_back(
    capped: tuple[WireProcess, list[socket.socket]],
) -> None:
    """Past ``WIRE_MAX_HTTP_CONNECTIONS`` every connection got a 503 before its
    request was read, and a browser's ``EventSource`` never retries a 503: a
    dashboard's feed stopped for good. Its request head is now read (briefly):
    an event stream asked for gets one that says to come back later, readable
    from the dashboard's origin; everything else still gets the 503."""
    proc, _ = capped
    answer = await until_closed(proc.port, EVENT_SOURCE)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK"), answer
    assert b"Content-Type: text/event-stream" in head
    assert b"Access-Control-Allow-Origin: *" in head
    assert b"retry: 5000\n\n" in body and b": closed 1013 too many connections" in body
    assert body.endswith(b"\r\n0\r\n\r\n"), body  # a complete chunked body
    plain = EVENT_SOURCE.replace(b"Accept: text/event-stream\r\n", b"")
    for request in (plain, b"GET /healthz HTTP/1.1\r\nHost: wire\r\n\r\n", None):
        refused = await until_closed(proc.port, request)
        assert refused.startswith(b"HTTP/1.1 503 "), refused  # a silent client too
        assert b'"too_many_connections"' in refused


class HeldTransport:
    """What the refusal writes, and whether it closed the connection."""

    def __init__(self) -> None:
        self.data = b""
        self.closed = False

    def write(self, data: bytes) -> None:
        self.data += data

    def close(self) -> None:
        self.closed = True


async def test_a_flood_over_the_cap_holds_at_most_max_peeking_connections_open() -> None:
    """Reading refused connections' heads must not hand a flood of silent sockets
    the descriptors the cap protects: past MAX_PEEKING being read, a refused
    connection is answered the 503 at once, and one whose head came (or that
    went away) frees its place."""
    cap = ConnectionCap(lambda: asyncio.Protocol(), 0, streams=lambda: 0, answer=REFUSAL)
    flood = [(cap(), HeldTransport()) for _ in range(MAX_PEEKING + 8)]
    for protocol, transport in flood:
        protocol.connection_made(transport)  # type: ignore[arg-type]
    waiting = [t for _, t in flood if not t.closed]
    assert len(waiting) == cap.peeking == MAX_PEEKING
    assert all(t.data == REFUSAL for _, t in flood[MAX_PEEKING:])
    first, first_t = flood[0]
    first.data_received(EVENT_SOURCE)
    assert first_t.closed and first_t.data.startswith(b"HTTP/1.1 200 OK")
    flood[1][0].connection_lost(None)
    assert cap.peeking == MAX_PEEKING - 2
    late, late_t = cap(), HeldTransport()
    late.connection_made(late_t)  # type: ignore[arg-type]
    assert not late_t.closed and cap.peeking == MAX_PEEKING - 1
    for protocol, _ in flood[2:MAX_PEEKING]:
        protocol.eof_received()
    late.data_received(b"GET /healthz HTTP/1.1\r\nHost: wire\r\n\r\n")
    assert late_t.data == REFUSAL and cap.peeking == 0


async def test_a_browser_event_source_over_the_http_connection_cap_comes_back(
    capped: tuple[WireProcess, list[socket.socket]], http: aiohttp.ClientSession
) -> None:
    """The same, judged by Chromium: a dashboard on another origin (none of its
    connections to the wire held open) whose ``EventSource`` meets the cap is
    retried (``readyState`` 0, not 2) and reads the feed once there is room."""
    proc, idle = capped
    async with chromium() as browser:
        page = await browser.new_page()
        await page.set_content("<title>dashboard</title>")
        await page.evaluate(OPEN_SOURCE.replace('"/v1/sse', f'"{proc.base}/v1/sse'))
        await page.wait_for_function("window.seen.length > 0", timeout=WAIT * 1000)
        assert await page.evaluate("window.seen") == ["error 0"]  # to be retried, not closed
        for s in idle:
            s.close()
        await comes_back(page, http, proc.base)


# ---- what the HTTP parser refuses, read from another origin ------------------------

FETCH_TOO_LONG = """async (base) => {
  try {
    const r = await fetch(base + "/v1/items?tags=" + "a".repeat(10000));
    return {status: r.status, code: (await r.json()).error.code};
  } catch (e) { return "blocked: " + e; }
}"""


async def test_a_request_the_parser_refuses_is_an_error_a_dashboard_can_read(
    redis_url: str,
) -> None:
    """A request line over 8 KiB (a dashboard building a long tag list) is refused
    by aiohttp's parser before any route runs, and its JSON 400 had no CORS
    headers: the page on another origin saw a network failure, not the error.
    Judged by Chromium against ``wire run`` (whose connections use the JSON
    errors protocol)."""
    proc = WireProcess(
        ["run", "--redis", redis_url], {"WIRE_EDITOR_TOKENS": EDITOR_TOKEN}, free_port()
    ).start()
    try:
        await proc.ready()
        async with chromium() as browser:
            page = await browser.new_page()
            await page.set_content("<title>dashboard</title>")
            got = await page.evaluate(FETCH_TOO_LONG, proc.base)
        assert got == {"status": 400, "code": "malformed_request"}, got
    finally:
        proc.kill()


# ---- requests to /v1/ws that are not WebSocket handshakes ---------------------------

KEY = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
VERSION = "Sec-WebSocket-Version: 13\r\n"
UPGRADE = "Upgrade: websocket\r\nConnection: Upgrade\r\n"


async def test_a_request_that_is_no_websocket_handshake_is_told_which_header_is_wrong(
    make_server: ServerFactory,
) -> None:
    """aiohttp answered every one of these ``400 {"code": "http_error", "message":
    "Bad Request"}``: a code the protocol does not list, naming nothing. A
    browser tab opened on the URL, a proxy that drops ``Connection: Upgrade``,
    a hand-written client with a bad key: each is now told what to send."""
    server = await make_server()
    cases = {
        "Upgrade": "",  # a plain GET, as a browser tab or curl sends
        "Connection": "Upgrade: websocket\r\n" + VERSION + KEY,  # a proxy dropped it
        "Sec-WebSocket-Key": UPGRADE + VERSION,
    }
    bad_keys = ["Sec-WebSocket-Key: abc\r\n", "Sec-WebSocket-Key: !!!!\r\n"]
    requests = [(field, extra) for field, extra in cases.items()]
    requests += [("Sec-WebSocket-Key", UPGRADE + VERSION + key) for key in bad_keys]
    # Connection given twice: its values are one list, and Upgrade is among them.
    requests.append(("Sec-WebSocket-Key", "Connection: keep-alive\r\n" + UPGRADE + VERSION))
    for field, extra in requests:
        raw = f"GET /v1/ws?tags=world HTTP/1.1\r\nHost: wire\r\n{extra}\r\n".encode()
        head, body = await exchange(server.settings.port, raw)
        assert status_of(head) == 400, (field, head)
        error = orjson.loads(body)["error"]
        assert error["code"] == "invalid_field" and error["field"] == field, error
        assert "RFC 6455" in error["message"], error
    # A real handshake still upgrades.
    raw = f"GET /v1/ws?tags=world HTTP/1.1\r\nHost: wire\r\n{UPGRADE}{VERSION}{KEY}\r\n".encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.settings.port)
    try:
        writer.write(raw)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
        assert status_of(head) == 101, head
    finally:
        writer.close()
