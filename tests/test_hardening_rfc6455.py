"""RFC 6455 details at the gateway's edge, from raw sockets and a foreign client.

A WebSocket library would never send what these tests send (unmasked frames,
close codes that must not appear on the wire, an old protocol version), so
the client here is a plain socket that writes handcrafted bytes. aiohttp
alone accepted all of it; ``wire.wsedge`` refuses it with the answers the RFC
asks for. The last test checks that a well-behaved client from another
ecosystem (Node's ``ws``) still gets a normal session and a clean close.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import socket
import struct
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import Server
from tests.support import npm_package, post
from wire.core.closecodes import sendable as sendable_close_code
from wire.gateway.reader import HUB
from wire.gateway.wsedge import SHORT_CLOSE, UNMASKED, FrameGuard

WAIT = 15.0


# --- a raw client -----------------------------------------------------------------


def frame(opcode: int, payload: bytes, *, masked: bool = True) -> bytes:
    """One final client frame; masked unless told otherwise."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, n | (0x80 if masked else 0)))
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 126 | (0x80 if masked else 0), n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 127 | (0x80 if masked else 0), n)
    if not masked:
        return head + payload
    key = os.urandom(4)
    stream = (key * (n // 4 + 1))[:n]
    masked_payload = (int.from_bytes(payload) ^ int.from_bytes(stream)).to_bytes(n)
    return head + key + masked_payload


def close_frame(code: int, reason: bytes = b"") -> bytes:
    return frame(0x8, struct.pack("!H", code) + reason)


def server_frames(data: bytes) -> list[tuple[int, bytes]]:
    """Decode unmasked server frames; every byte must belong to a whole frame."""
    out, i = [], 0
    while i < len(data):
        assert not data[i + 1] & 0x80, "the server masked a frame"
        n, j = data[i + 1] & 0x7F, i + 2
        if n == 126:
            (n,), j = struct.unpack("!H", data[j : j + 2]), j + 2
        elif n == 127:
            (n,), j = struct.unpack("!Q", data[j : j + 8]), j + 8
        assert j + n <= len(data), "a partial frame before the connection closed"
        out.append((data[i] & 0x0F, data[j : j + n]))
        i = j + n
    return out


def handshake(port: int, path: str = "/v1/ws", version: str | None = "13") -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
    ]
    if version is not None:
        lines.append(f"Sec-WebSocket-Version: {version}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class Raw:
    """A socket speaking handcrafted WebSocket."""

    def __init__(self, sock: socket.socket, head: bytes, rest: bytes) -> None:
        self.sock = sock
        self.head = head  # the HTTP response head
        self.rest = rest  # bytes read after it

    @classmethod
    async def open(cls, port: int, request: bytes, *, then: bytes = b"") -> Raw:
        """Send ``request`` (and ``then`` in the same write); read the response head."""
        loop = asyncio.get_running_loop()
        sock = socket.socket()
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", port))
        await loop.sock_sendall(sock, request + then)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = await asyncio.wait_for(loop.sock_recv(sock, 4096), WAIT)
            assert chunk, f"closed during the handshake: {data!r}"
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        return cls(sock, head, rest)

    @property
    def status(self) -> int:
        return int(self.head.split(b" ", 2)[1])

    def header(self, name: str) -> list[str]:
        lines = self.head.decode("latin-1").split("\r\n")[1:]
        pairs = [line.split(":", 1) for line in lines]
        return [v.strip() for k, v in pairs if k.strip().lower() == name.lower()]

    async def send(self, data: bytes) -> None:
        await asyncio.get_running_loop().sock_sendall(self.sock, data)

    async def read_to_eof(self) -> bytes:
        """Everything the server sends until it closes the connection."""
        loop = asyncio.get_running_loop()
        data = bytearray(self.rest)
        while True:
            try:
                chunk = await asyncio.wait_for(loop.sock_recv(self.sock, 1 << 16), WAIT)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
        return bytes(data)

    async def read_body(self) -> bytes:
        """An HTTP response body of Content-Length bytes (the connection may stay open)."""
        loop = asyncio.get_running_loop()
        length = int(self.header("Content-Length")[0])
        while len(self.rest) < length:
            chunk = await asyncio.wait_for(loop.sock_recv(self.sock, 4096), WAIT)
            assert chunk, "closed before the whole body arrived"
            self.rest += chunk
        return self.rest[:length]

    async def next_text(self) -> dict[str, Any]:
        """The next text frame as JSON (other frames before it are skipped)."""
        loop = asyncio.get_running_loop()
        while True:
            found = _first_text(self.rest)
            if found is not None:
                message, self.rest = found
                return message
            chunk = await asyncio.wait_for(loop.sock_recv(self.sock, 1 << 16), WAIT)
            assert chunk, "closed while waiting for a message"
            self.rest += chunk

    def close(self) -> None:
        self.sock.close()


def _first_text(data: bytes) -> tuple[dict[str, Any], bytes] | None:
    i = 0
    while i + 2 <= len(data):
        n, j = data[i + 1] & 0x7F, i + 2
        if n == 126:
            if j + 2 > len(data):
                return None
            (n,), j = struct.unpack("!H", data[j : j + 2]), j + 2
        if j + n > len(data):
            return None
        if data[i] & 0x0F == 0x1:
            return orjson.loads(data[j : j + n]), data[j + n :]
        i = j + n
    return None


async def connected(server: Server, path: str = "/v1/ws", *, then: bytes = b"") -> Raw:
    raw = await Raw.open(server.settings.port, handshake(server.settings.port, path), then=then)
    assert raw.status == 101, raw.head
    return raw


async def closed_with(raw: Raw) -> tuple[int, str]:
    """The code and reason of the close frame the server ends with."""
    try:
        frames = server_frames(await raw.read_to_eof())
    finally:
        raw.close()
    assert frames and frames[-1][0] == 0x8, frames
    payload = frames[-1][1]
    return struct.unpack("!H", payload[:2])[0], payload[2:].decode()


async def no_connections(server: Server) -> None:
    hub = server.app[HUB]
    for _ in range(int(WAIT / 0.01)):
        if not hub.conns:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the refused connection is still attached to the hub")


# --- masking (RFC 6455 5.1) --------------------------------------------------------


async def test_unmasked_text_frame_is_closed_with_1002(server: Server) -> None:
    raw = await connected(server)
    await raw.send(frame(0x1, b'{"type":"ping"}', masked=False))
    assert await closed_with(raw) == (1002, UNMASKED)
    await no_connections(server)


@pytest.mark.parametrize("opcode", [0x2, 0x9, 0xA, 0x8])
async def test_every_unmasked_frame_kind_is_refused(server: Server, opcode: int) -> None:
    payload = struct.pack("!H", 1000) if opcode == 0x8 else b"x"
    raw = await connected(server)
    await raw.send(frame(opcode, payload, masked=False))
    assert await closed_with(raw) == (1002, UNMASKED)


async def test_unmasked_frame_after_masked_ones_is_refused_and_earlier_ones_answered(
    server: Server,
) -> None:
    raw = await connected(server)
    await raw.send(frame(0x1, b'{"type":"ping"}'))
    assert await raw.next_text() == {"type": "pong"}
    # A long masked frame (16-bit length) split inside its header, then an unmasked one.
    long = frame(0x1, orjson.dumps({"type": "ping", "pad": "x" * 300}))
    await raw.send(long[:3])
    await raw.send(long[3:] + frame(0x1, b"{}", masked=False)[:1])
    assert await raw.next_text() == {"type": "pong"}
    await raw.send(frame(0x1, b"{}", masked=False)[1:])
    assert await closed_with(raw) == (1002, UNMASKED)


async def test_unmasked_frame_sent_with_the_handshake_is_refused(server: Server) -> None:
    """Bytes right behind the upgrade request reach the parser first; they are checked too."""
    raw = await connected(server, then=frame(0x1, b'{"type":"ping"}', masked=False))
    assert await closed_with(raw) == (1002, UNMASKED)
    await no_connections(server)


# --- close codes (RFC 6455 7.4) ----------------------------------------------------


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535])
async def test_close_code_not_allowed_on_the_wire_is_answered_with_1002(
    server: Server, code: int
) -> None:
    raw = await connected(server)
    await raw.send(close_frame(code, b"bye"))
    assert await closed_with(raw) == (1002, f"invalid close code {code} (RFC 6455 7.4)")
    await no_connections(server)


async def test_close_frame_with_a_one_byte_payload_is_a_protocol_error(server: Server) -> None:
    raw = await connected(server)
    await raw.send(frame(0x8, b"\x03"))
    assert await closed_with(raw) == (1002, SHORT_CLOSE)


@pytest.mark.parametrize("code", [1000, 1001, 1008, 1014, 3000, 4999])
async def test_valid_close_is_answered_with_1000(server: Server, code: int) -> None:
    raw = await connected(server)
    await raw.send(close_frame(code, b"done"))
    assert (await closed_with(raw))[0] == 1000
    await no_connections(server)


async def test_close_without_a_code_is_answered_with_1000(server: Server) -> None:
    raw = await connected(server)
    await raw.send(frame(0x8, b""))
    assert (await closed_with(raw))[0] == 1000


async def test_invalid_close_code_split_across_writes_is_still_seen(server: Server) -> None:
    raw = await connected(server)
    bad = close_frame(1006)
    for i in range(len(bad)):  # a byte at a time: the code arrives in two reads
        await raw.send(bad[i : i + 1])
    assert (await closed_with(raw))[0] == 1002


# --- version (RFC 6455 4.2.2) -----------------------------------------------------


@pytest.mark.parametrize("version", ["8", "7", "12", "14", " 13, 8", None])
async def test_other_websocket_version_gets_426(server: Server, version: str | None) -> None:
    port = server.settings.port
    raw = await Raw.open(port, handshake(port, "/v1/ws?tags=world", version))
    try:
        body = json.loads(await raw.read_body())
    finally:
        raw.close()
    assert raw.status == 426, raw.head
    assert raw.header("Sec-WebSocket-Version") == ["13"]
    assert raw.header("Upgrade") == ["websocket"]
    assert raw.header("Content-Type")[0].startswith("application/json")
    assert body["error"]["code"] == "unsupported_websocket_version"
    assert body["error"]["field"] == "Sec-WebSocket-Version"
    assert "Sec-WebSocket-Version: 13" in body["error"]["message"]
    assert server.app[HUB].conns == set()


async def test_version_13_with_spaces_upgrades(server: Server) -> None:
    port = server.settings.port
    raw = await Raw.open(port, handshake(port, version=" 13 "))
    raw.close()
    assert raw.status == 101


# --- what still works -------------------------------------------------------------


async def test_masked_subscribe_gets_items(server: Server, http: aiohttp.ClientSession) -> None:
    raw = await connected(server)
    try:
        await raw.send(frame(0x1, orjson.dumps({"type": "subscribe", "tags": ["world"]})))
        assert (await raw.next_text())["type"] == "subscribed"
        status, body = await post(http, server.base, {"title": "Masked", "tags": ["world"]})
        assert status == 201, body
        msg = await raw.next_text()
        assert msg["type"] == "item" and msg["item"]["id"] == body["item"]["id"]
        await raw.send(close_frame(1000))
        assert (await closed_with(raw))[0] == 1000
    finally:
        raw.close()


# --- the guard's frame walk, every way the bytes may be split ------------------------


class Collect:
    """Stands in for aiohttp's parser: keeps what the guard passes on."""

    def __init__(self) -> None:
        self.data = b""

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self.data += data
        return False, b""

    def feed_eof(self) -> None:
        pass


client_frames = st.lists(
    st.one_of(
        st.builds(lambda n: frame(0x1, b"a" * n), st.sampled_from([0, 1, 125, 126, 65535, 65536])),
        st.builds(lambda c: close_frame(c), st.sampled_from([1000, 1001, 3000, 4999])),
        st.just(frame(0x8, b"")),
        st.just(frame(0x9, b"p")),
    ),
    min_size=1,
    max_size=4,
)


@given(client_frames, st.lists(st.integers(0, 70_000), max_size=5), st.sampled_from(["", "u", "c"]))
def test_guard_passes_every_good_byte_and_refuses_only_the_bad_frame(
    good: list[bytes], cuts: list[int], bad: str
) -> None:
    stream = b"".join(good)
    tail = {"": b"", "u": frame(0x1, b"x", masked=False), "c": close_frame(1006)}[bad]
    data = stream + tail
    points = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
    inner = Collect()
    guard = FrameGuard(inner)
    for a, b in itertools.pairwise(points):
        guard.feed_data(data[a:b])
    if not bad:
        assert guard.refusal is None and inner.data == stream
    else:
        assert guard.refusal is not None
        # The parser got the good frames at most, and never the whole bad one
        # (a read may end inside its header before the guard can tell).
        assert data.startswith(inner.data) and len(inner.data) < len(data)


def test_sendable_close_codes() -> None:
    allowed = [c for c in range(70_000) if sendable_close_code(c)]
    assert allowed == [1000, 1001, 1002, 1003, *range(1007, 1015), *range(3000, 5000)]


# --- a foreign client: Node's ws ----------------------------------------------------

NODE_CLIENT = r"""
const WebSocket = require("ws");
const ws = new WebSocket(process.argv[2]);
const say = (m) => process.stdout.write(JSON.stringify(m) + "\n");
ws.on("message", (data, binary) => {
  const msg = JSON.parse(data.toString());
  say(msg);
  if (msg.type === "item") ws.close(1000, "got it");
});
ws.on("close", (code, reason) => { say({type: "closed", code, reason: reason.toString()}); });
ws.on("error", (err) => { say({type: "failed", error: String(err)}); process.exitCode = 2; });
"""


@pytest.fixture(scope="session")
def node_ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory whose node_modules holds ``ws``, installed once and kept between runs."""
    cache = npm_package(tmp_path_factory.getbasetemp().parent, "ws@8", "ws")
    (cache / "client.js").write_text(NODE_CLIENT)
    return cache


async def test_node_ws_client_subscribes_receives_and_closes_cleanly(
    server: Server, http: aiohttp.ClientSession, node_ws: Path
) -> None:
    proc = await asyncio.create_subprocess_exec(
        "node",
        str(node_ws / "client.js"),
        server.ws + "?tags=world",
        cwd=node_ws,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    seen: list[dict[str, Any]] = []
    try:
        while not seen or seen[-1]["type"] not in ("closed", "failed"):
            line = await asyncio.wait_for(proc.stdout.readline(), WAIT)
            assert line, f"node ended early after {seen}"
            seen.append(json.loads(line))
            if seen[-1]["type"] == "subscribed":
                status, body = await post(http, server.base, {"title": "Node", "tags": ["world"]})
                assert status == 201, body
        assert await asyncio.wait_for(proc.wait(), WAIT) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert [m["type"] for m in seen] == ["subscribed", "item", "closed"], seen
    assert seen[1]["item"]["title"] == "Node"
    assert seen[2]["code"] == 1000
    await no_connections(server)
