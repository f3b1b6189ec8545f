"""The live feeds judged by clients the wire does not control.

An HTTP/1.0 client (a proxy left at nginx's default ``proxy_http_version``)
on the event stream, handshakes that are not WebSocket handshakes, and a
browser ``EventSource`` that meets the gateway's connection cap: each gets
an answer it can act on, never a 500 and never a feed that stops for good.
"""

from __future__ import annotations

import asyncio

import orjson

from tests.conftest import ServerFactory
from tests.support import wait_for
from wire.gateway.reader import HUB

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
