"""Floods and bad input: each answered clearly, and the server keeps serving.

Every test ends by checking that a well-behaved client is still served
normally by the same server. The counting test at the end runs a table of
bad inputs against a real ``wire run`` process and asserts that every one got
its documented answer, that none got a 5xx and that the process is alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import resource
import time
from collections import Counter
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Origin

from tests.conftest import Server, ServerFactory
from tests.support import EDITOR_TOKEN, WireProcess, free_port, item, post

#: Connections opened at once against a process that admits LIMIT of them.
FLOOD_CONNECTIONS = 2_000
FLOOD_LIMIT = 100
SUBSCRIBE_FLOOD = 10_000
PING_FLOOD = 20_000
PROTOCOL_PING_FLOOD = 5_000
SLOWLORIS_CONNECTIONS = 50
IDLE_TIMEOUT = 2.0
READER_TOKEN = "reader-token-for-tests"
SECRET = b"secret-token-in-a-url"
AUTH = {"Authorization": f"Bearer {EDITOR_TOKEN}"}
WAIT = 10.0


async def recv(ws: Any, wait: float = WAIT) -> dict[str, Any]:
    msg: dict[str, Any] = orjson.loads(await asyncio.wait_for(ws.recv(), wait))
    return msg


async def next_of(ws: Any, kind: str) -> dict[str, Any]:
    """The next message of type ``kind`` (items, pongs... in between are skipped)."""
    while True:
        msg = await recv(ws)
        if msg["type"] == kind:
            return msg


async def still_serving(http: aiohttp.ClientSession, base: str, ws_url: str) -> None:
    """A normal client subscribes, a normal editor publishes, the item arrives."""
    async with websockets.connect(ws_url + "?tags=health", open_timeout=WAIT) as ws:
        assert (await recv(ws))["type"] == "subscribed"
        status, body = await post(http, base, item("Still serving", ["health"]))
        assert status == 201, body
        got = await next_of(ws, "item")
        assert got["item"]["id"] == body["item"]["id"]
        await ws.send('{"type": "ping"}')
        assert (await next_of(ws, "pong")) == {"type": "pong"}


@pytest.fixture
async def ready_server(make_server: ServerFactory, http: aiohttp.ClientSession) -> Server:
    server = await make_server(ping_interval=60)
    await until_ready(http, server.base)
    return server


async def until_ready(http: aiohttp.ClientSession, base: str) -> None:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        async with http.get(base + "/readyz") as resp:
            if resp.status == 200:
                return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{base} never became ready")


@pytest.fixture
def wire_procs() -> Iterable[Callable[..., WireProcess]]:
    started: list[WireProcess] = []

    def spawn(*args: str, env: dict[str, str]) -> WireProcess:
        proc = WireProcess(list(args), {"WIRE_EDITOR_TOKENS": EDITOR_TOKEN, **env}, free_port())
        started.append(proc.start())
        return proc

    yield spawn
    for proc in started:
        proc.kill()


def alive(proc: WireProcess) -> bool:
    return proc.proc is not None and proc.proc.poll() is None


def raise_open_files(needed: int) -> int:
    """Raise the soft open-files limit toward ``needed`` (up to the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


# -- connection flood -------------------------------------------------------------


async def test_connection_flood_beyond_the_limit_is_refused_with_503(
    redis_url: str, wire_procs: Callable[..., WireProcess], http: aiohttp.ClientSession
) -> None:
    # Each connection is one descriptor here (the server is another process).
    limit = raise_open_files(FLOOD_CONNECTIONS + 500)
    assert limit >= FLOOD_CONNECTIONS + 500, f"open-files limit {limit} is too low for the flood"
    proc = wire_procs("run", "--redis", redis_url, env={"WIRE_MAX_CONNECTIONS": str(FLOOD_LIMIT)})
    await proc.ready()
    outcomes: Counter[str] = Counter()
    opened: list[Any] = []

    async def one() -> None:
        try:
            ws = await websockets.connect(proc.ws, open_timeout=60, ping_interval=None)
        except InvalidStatus as refused:
            body = orjson.loads(refused.response.body or b"{}")
            outcomes[f"{refused.response.status_code} {body['error']['code']}"] += 1
            return
        opened.append(ws)
        outcomes["accepted"] += 1

    try:
        await asyncio.gather(*(one() for _ in range(FLOOD_CONNECTIONS)))
        assert outcomes == {
            "accepted": FLOOD_LIMIT,
            "503 too_many_connections": FLOOD_CONNECTIONS - FLOOD_LIMIT,
        }, outcomes
        assert alive(proc)
        # The admitted ones work; once they leave, newcomers are admitted again.
        await opened[0].send('{"type": "ping"}')
        assert (await recv(opened[0]))["type"] == "pong"
    finally:
        await asyncio.gather(*(ws.close() for ws in opened), return_exceptions=True)
    deadline = time.monotonic() + WAIT
    while True:
        try:
            await still_serving(http, proc.base, proc.ws)
            break
        except InvalidStatus:  # the closes are still being processed
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)


# -- message floods ---------------------------------------------------------------


async def test_subscribe_flood_is_rate_limited_and_the_connection_stays_usable(
    ready_server: Server, http: aiohttp.ClientSession
) -> None:
    server = ready_server
    async with websockets.connect(server.ws, max_queue=None) as ws:
        answers: Counter[str] = Counter()
        message = orjson.dumps({"type": "subscribe", "tags": ["flood"]}).decode()

        async def reader() -> None:
            while sum(answers.values()) < SUBSCRIBE_FLOOD:
                msg = await recv(ws)
                answers[msg.get("code", msg["type"])] += 1

        reading = asyncio.create_task(reader())
        started = time.monotonic()
        for n in range(SUBSCRIBE_FLOOD):
            await ws.send(message)
            if n % 1000 == 999:
                await asyncio.sleep(0)  # let the reader keep up
        await asyncio.wait_for(reading, 30)
        elapsed = time.monotonic() - started
        assert set(answers) == {"subscribed", "rate_limited"}, answers
        # At most 20 a second get through: one window per started second.
        assert 20 <= answers["subscribed"] <= 20 * (int(elapsed) + 2), (answers, elapsed)
        assert answers["rate_limited"] == SUBSCRIBE_FLOOD - answers["subscribed"]
        # A second later the same connection subscribes and receives items.
        await asyncio.sleep(1.0)  # the rate window is one second long
        await ws.send(orjson.dumps({"type": "subscribe", "tags": ["health"]}).decode())
        assert (await next_of(ws, "subscribed"))["tags"] == ["flood", "health"]
        _, body = await post(http, server.base, item("After the flood", ["health"]))
        assert (await next_of(ws, "item"))["item"]["id"] == body["item"]["id"]
    await still_serving(http, server.base, server.ws)


async def test_ping_flood_is_answered_and_others_are_unaffected(
    ready_server: Server, http: aiohttp.ClientSession
) -> None:
    server = ready_server
    async with (
        websockets.connect(server.ws + "?tags=world", max_queue=None) as other,
        websockets.connect(server.ws, max_queue=None) as flooder,
    ):
        assert (await recv(other))["type"] == "subscribed"
        pongs = 0

        async def count_pongs() -> None:
            nonlocal pongs
            while pongs < PING_FLOOD:
                if (await recv(flooder))["type"] == "pong":
                    pongs += 1

        counting = asyncio.create_task(count_pongs())
        published: list[str] = []

        async def publish_meanwhile() -> None:
            for n in range(20):
                _, body = await post(http, server.base, item(f"During the flood {n}", ["world"]))
                published.append(body["item"]["id"])

        publishing = asyncio.create_task(publish_meanwhile())
        for n in range(PING_FLOOD):
            await flooder.send('{"type":"ping"}')
            if n % 1000 == 999:
                await asyncio.sleep(0)
        # Protocol-level pings too: each answered with a pong frame.
        waiters = [await flooder.ping() for _ in range(PROTOCOL_PING_FLOOD)]
        await asyncio.wait_for(asyncio.gather(*waiters), 30)
        await asyncio.wait_for(asyncio.gather(counting, publishing), 30)
        assert pongs == PING_FLOOD
        got = [(await next_of(other, "item"))["item"]["id"] for _ in published]
        assert got == published, "the other subscriber received everything, in order"
    await still_serving(http, server.base, server.ws)


# -- slowloris ---------------------------------------------------------------------


async def test_slowloris_is_dropped_after_the_idle_timeout_without_hurting_others(
    redis_url: str, wire_procs: Callable[..., WireProcess], http: aiohttp.ClientSession
) -> None:
    proc = wire_procs("run", "--redis", redis_url, env={"WIRE_IDLE_TIMEOUT": str(IDLE_TIMEOUT)})
    await proc.ready()
    request = b"GET /v1/items HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 10_000
    dropped_after: list[float] = []

    async def slowloris() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", proc.port)
        started = time.monotonic()
        try:
            for byte in request:  # one byte every 50 ms: never a whole request
                writer.write(bytes([byte]))
                await writer.drain()
                with contextlib.suppress(TimeoutError):
                    if await asyncio.wait_for(reader.read(1), 0.05) == b"":
                        break
        except ConnectionError:
            pass
        dropped_after.append(time.monotonic() - started)
        writer.close()

    async def a_stream_outlives_the_timeout() -> None:
        async with websockets.connect(proc.ws + "?tags=slow") as ws:
            assert (await recv(ws))["type"] == "subscribed"
            await asyncio.sleep(IDLE_TIMEOUT + 1)  # a quiet stream is not an idle request
            _, body = await post(http, proc.base, item("Quiet stream", ["slow"]))
            assert (await next_of(ws, "item"))["item"]["id"] == body["item"]["id"]

    async def normal_clients() -> list[float]:
        took = []
        for _ in range(20):
            started = time.monotonic()
            async with http.get(proc.base + "/v1/items?limit=1") as resp:
                assert resp.status == 200
            took.append(time.monotonic() - started)
            await asyncio.sleep(0.1)
        return took

    # The slowloris clients in a group of their own: a flat gather would mix the result types.
    results = await asyncio.gather(
        asyncio.gather(*(slowloris() for _ in range(SLOWLORIS_CONNECTIONS))),
        a_stream_outlives_the_timeout(),
        normal_clients(),
    )
    assert len(results[-1]) == 20, "normal requests were served while the slowloris ran"
    assert len(dropped_after) == SLOWLORIS_CONNECTIONS
    # Dropped, and not before the timeout (how soon after it is the bench's business).
    assert all(t > IDLE_TIMEOUT - 0.5 for t in dropped_after), dropped_after
    assert alive(proc)
    await still_serving(http, proc.base, proc.ws)


async def test_a_trickled_request_body_gets_408_and_stores_nothing(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    server = await make_server(idle_timeout=0.5)
    body = orjson.dumps(item("Slow body"))
    reader, writer = await asyncio.open_connection("127.0.0.1", server.settings.port)
    writer.write(
        b"POST /v1/items HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + EDITOR_TOKEN.encode() + b"\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body) + body[:10]
    )
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 408")
    writer.close()
    async with http.get(server.base + "/v1/items") as resp:
        assert (await resp.json())["items"] == []


# -- bad frames -------------------------------------------------------------------


async def closed_with(ws: Any, send: Callable[[], Any]) -> int | None:
    """Send something, then read until the server closes; the close code it sent."""
    await send()
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await recv(ws)
    return closed.value.rcvd.code if closed.value.rcvd else None


async def test_oversized_frame_closes_with_1009(
    ready_server: Server, http: aiohttp.ClientSession
) -> None:
    server = ready_server
    limit = server.settings.max_frame
    async with websockets.connect(server.ws, max_size=None) as ws:
        fits = orjson.dumps({"type": "ping", "pad": "x" * (limit - 40)}).decode()
        await ws.send(fits)
        assert (await recv(ws))["type"] == "pong", "a frame within the limit is fine"
        too_big = orjson.dumps({"type": "ping", "pad": "x" * limit}).decode()
        assert await closed_with(ws, lambda: ws.send(too_big)) == 1009
    await still_serving(http, server.base, server.ws)


async def test_invalid_utf8_in_a_text_frame_closes_with_1007(
    ready_server: Server, http: aiohttp.ClientSession
) -> None:
    server = ready_server
    for bad in (b'{"type": "ping", "x": "\xff"}', b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80"):
        async with websockets.connect(server.ws) as ws:
            assert await closed_with(ws, partial(ws.send, bad, text=True)) == 1007
    await still_serving(http, server.base, server.ws)


async def test_binary_frames_are_answered_and_the_connection_stays_open(
    ready_server: Server, http: aiohttp.ClientSession
) -> None:
    server = ready_server
    async with websockets.connect(server.ws) as ws:
        for payload in (b'{"type": "ping"}', b"\x00\x01\x02", b""):
            await ws.send(payload)
            err = await recv(ws)
            assert err["type"] == "error" and err["code"] == "invalid_message"
            assert "binary" in err["message"]
        await ws.send('{"type": "ping"}')
        assert (await recv(ws)) == {"type": "pong"}
    await still_serving(http, server.base, server.ws)


# -- origins and tokens -----------------------------------------------------------


async def test_an_origin_not_allowed_is_refused_with_403(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    server = await make_server(allowed_origins=("https://desk.example",))
    await until_ready(http, server.base)
    for origin in (
        "https://evil.example",
        "null",
        "https://desk.example.evil",
        "http://desk.example",
    ):
        with pytest.raises(InvalidStatus) as refused:
            async with websockets.connect(server.ws, origin=Origin(origin)):
                pass
        assert refused.value.response.status_code == 403
        assert orjson.loads(refused.value.response.body)["error"]["code"] == "forbidden"
        async with http.get(server.base + "/v1/sse", headers={"Origin": origin}) as resp:
            assert resp.status == 403 and (await resp.json())["error"]["code"] == "forbidden"
    async with websockets.connect(server.ws, origin=Origin("https://desk.example")) as ws:
        await ws.send('{"type": "ping"}')
        assert (await recv(ws)) == {"type": "pong"}
    await still_serving(http, server.base, server.ws)  # no Origin: not a browser


#: Routes anyone may call: probes, metrics and the static pages.
PUBLIC = {
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/"),
    ("GET", "/editor"),
    ("GET", "/static/{name}"),
    ("GET", "/static/pictures/{name}"),
}
#: Routes that need an editor token (a subscriber token is not enough).
EDITOR_ONLY = {
    ("POST", "/v1/items"),
    ("POST", "/v1/stories/{guid}/withdraw"),
    ("GET", "/v1/embargoes"),
    ("DELETE", "/v1/embargoes/{guid}"),
}
PATH_VALUES = {"id": "1-0", "guid": "some-story", "name": "app.js"}


def routes(server: Server) -> list[tuple[str, str]]:
    """Every (method, path template) the app serves (HEAD twins of GETs left out)."""
    found = set()
    for route in server.app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        template = info.get("formatter") or info.get("path")
        if route.method != "HEAD" and template:
            found.add((route.method, template))
    return sorted(found)


async def test_missing_and_wrong_tokens_get_401_on_every_route(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    server = await make_server(subscriber_tokens=(READER_TOKEN,))
    await until_ready(http, server.base)
    served = routes(server)
    assert ("GET", "/v1/ws") in served and ("POST", "/v1/items") in served
    checked = 0
    for method, template in served:
        if (method, template) in PUBLIC:
            continue
        url = server.base + template.format(**PATH_VALUES)
        bad = [None, "wrong", EDITOR_TOKEN + "x", EDITOR_TOKEN[:-1], ""]
        if (method, template) in EDITOR_ONLY:
            bad.append(READER_TOKEN)
        for token in bad:
            headers = {"Content-Type": "application/json"}
            if token is not None:
                headers["Authorization"] = f"Bearer {token}"
            body = orjson.dumps(item(reason="r"))
            async with http.request(method, url, headers=headers, data=body) as resp:
                answer = await resp.json(content_type=None)
                assert resp.status == 401, (method, template, token, resp.status, answer)
                assert answer["error"]["code"] == "unauthorized"
            checked += 1
        # ?token= works like the header on the streams; a wrong one is refused too.
        if template in ("/v1/ws", "/v1/sse"):
            async with http.get(url + "?token=wrong") as resp:
                assert resp.status == 401
            checked += 1
    assert checked >= 40, f"checked {checked} route/token pairs"
    # The right tokens open the same doors.
    async with websockets.connect(f"{server.ws}?token={READER_TOKEN}&tags=health") as ws:
        assert (await recv(ws))["type"] == "subscribed"
    async with http.get(
        server.base + "/v1/items", headers={"Authorization": f"Bearer {READER_TOKEN}"}
    ) as resp:
        assert resp.status == 200


# -- the counting test --------------------------------------------------------------

#: Tag characters rejected after normalization, from every Unicode category
#: that has any (letters, marks and digits are allowed; spaces become "-",
#: and compatibility forms such as "²" or "Ⅻ" normalize to allowed text).
BAD_TAG_CHARS = {
    "Cc": ["\x00", "\x01", "\x08", "\x1b", "\x7f", "\x80", "\x9f"],
    "Cf": [
        "\u200b",  # zero-width space
        "\u200c",  # zero-width non-joiner
        "\u200d",  # zero-width joiner
        "\u200e",  # left-to-right mark
        "\u200f",  # right-to-left mark
        "\u202a",
        "\u202b",
        "\u202c",
        "\u202d",  # left-to-right override
        "\u202e",  # right-to-left override
        "\u2066",
        "\u2067",
        "\u2068",
        "\u2069",  # isolates
        "\u2060",  # word joiner
        "\ufeff",  # byte order mark
        "\u00ad",  # soft hyphen
        "\u061c",  # Arabic letter mark
        "\U000e0001",  # language tag
        "\U000e0061",  # tag latin small a
    ],
    "Co": ["\ue000", "\uf8ff", "\U000f0000"],
    "Cn": ["\u0378", "\ufffe", "\U0010ffff"],
    "Sm": ["+", "<", "=", "~", "\u2211", "\u00ac"],
    "Sc": ["$", "\u20ac", "\u00a3"],
    "Sk": ["^", "`", "\u02c2"],
    "So": ["\u00a9", "\u2603", "\U0001f600"],
    "Pc": ["_", "\u203f"],
    "Pd": ["\u2013", "\u2014"],
    "Ps": ["(", "[", "{"],
    "Pe": [")", "]", "}"],
    "Pi": ["\u00ab", "\u201c"],
    "Pf": ["\u00bb", "\u201d"],
    "Po": ["!", "#", "%", "&", "*", ".", ",", ":", ";", "?", "@", "\\", "'", '"'],
    "Nl": ["\u16ee"],
    "No": ["\u00bd", "\u0f2a"],
}
BAD_TAG_SHAPES = ["", "   ", "/", "a//b", "/a", "a/", "a" * 65, "x" * 10_000, "*a", "a*", "**"]


def bad_tags() -> list[str]:
    from wire.core.errors import InvalidTag
    from wire.core.tags import normalize_tag

    tags = [f"a{ch}b" for chars in BAD_TAG_CHARS.values() for ch in chars] + BAD_TAG_SHAPES
    for tag in tags:  # the table itself is checked: each must be one the wire rejects
        with pytest.raises(InvalidTag):
            normalize_tag(tag)
    return tags


def url_tags() -> list[str]:
    """Bad tags short enough for a URL (a request line is at most 8 KiB)."""
    return [t for t in bad_tags() if len(t) < 1000]


BAD_IDS = [
    "abc",
    "1-",
    "-1",
    "1-2-3",
    "\u0661\u0662\u0663-\u0660",
    "99999999999999999999999-0",
    "18446744073709551616-0",
    "1-18446744073709551616",
    " 1-0",
    "1-0 ",
    "0x10-0",
    "1.5-0",
    "1e3-0",
    "+1-0",
    "1-+0",
]
BAD_LIMITS = ["0", "-1", "501", "abc", "1.5", "\u00b2", "1" * 5000, "", " 5", "0x10", "\u0661"]
MALFORMED_JSON = [
    b"{",
    b"[",
    b"{'title': 'x'}",
    b"nul",
    b"",
    b"   ",
    b'{"title": }',
    b'{"title": "a", "tags": ["b"],}',
    b"NaN",
    b"Infinity",
    b"1e999999",
    b"\x00",
    b"\xff\xfe{}",
    b'\xef\xbb\xbf{"title": "a", "tags": ["b"]}',
    b'{"title": "\\ud800", "tags": ["b"]}',
    b'{"title": "a\xff", "tags": ["b"]}',
    b'{"a": 1}{"b": 2}',
    b"/* comment */ {}",
    b"[" * 10_000 + b"]" * 10_000,
    b'{"title": ' + b"[" * 10_000 + b"]" * 10_000 + b', "tags": ["b"]}',
    b'{"title": "a", "tags": ' + b'{"a":' * 5_000 + b"1" + b"}" * 5_000 + b"}",
]
WRONG_VALUES: list[Any] = [1, -1, 1.5, True, False, None, [], {}, ["x"], [1], [[]], {"a": 1}, ""]


def nested(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = [value]
    return value


def accepted(body: object) -> bool:
    from wire.core.errors import ValidationError
    from wire.core.items import parse_submission

    try:
        parse_submission(body)
    except ValidationError:
        return False
    return True


def submission_cases() -> list[tuple[str, bytes]]:
    """Item bodies that the validator refuses, as (name, JSON body)."""
    good = {"title": "A title", "tags": ["world"]}
    bodies: list[tuple[str, Any]] = [
        # A non-empty list is a batch (tests/test_batch.py); an empty one is refused.
        ("body is an empty list", []),
        ("body is a string", "title"),
        ("body is a number", 1),
        ("body is null", None),
        ("body is true", True),
        ("empty object", {}),
        ("no tags", {"title": "x"}),
        ("no title", {"tags": ["x"]}),
        ("huge title", {**good, "title": "x" * 10_000}),
        ("huge subtitle", {**good, "subtitle": "x" * 1_001}),
        ("huge body", {**good, "body": "x" * 100_001}),
        ("huge mark", {**good, "mark": "x" * 41}),
        ("huge url", {**good, "url": "https://example.com/" + "x" * 3_000}),
        ("huge guid", {**good, "guid": "g" * 201}),
        ("too many tags", {**good, "tags": [f"t{n}" for n in range(21)]}),
        ("title 200 deep", {**good, "title": nested(200)}),
        ("tags 200 deep", {**good, "tags": nested(200)}),
        ("control char in title", {**good, "title": "a\x00b"}),
        ("newline in title", {**good, "title": "a\nb"}),
        ("escape in mark", {**good, "mark": "a\x1bb"}),
        ("javascript url", {**good, "url": "javascript:alert(1)"}),
        ("ftp url", {**good, "url": "ftp://example.com/x"}),
        ("relative url", {**good, "url": "/a/b"}),
        ("url without host", {**good, "url": "http://"}),
        ("url with space", {**good, "url": "http://exa mple.com"}),
        ("url bad port", {**good, "url": "http://example.com:99999/"}),
        ("guid with space", {**good, "guid": "a b"}),
        ("guid with slash", {**good, "guid": "a/b"}),
        ("empty guid", {**good, "guid": ""}),
        ("urgency 0", {**good, "urgency": 0}),
        ("urgency 10", {**good, "urgency": 10}),
        ("urgency 2**63", {**good, "urgency": 2**63 - 1}),
        ("urgency -2**63", {**good, "urgency": -(2**63)}),
        ("embargo in the past", {**good, "embargo_until": "2001-01-01T00:00:00Z"}),
        ("embargo without zone", {**good, "embargo_until": "2099-01-01T00:00:00"}),
        ("embargo garbage", {**good, "embargo_until": "tomorrow"}),
        ("embargo too far", {**good, "embargo_until": "2999-01-01T00:00:00Z"}),
        ("unknown field", {**good, "extra": 1}),
        ("empty field name", {**good, "": 1}),
        ("huge field name", {**good, "f" * 10_000: 1}),
    ]
    bodies += [(f"server field {f}", {**good, f: "1-0"}) for f in ("id", "version", "pubstatus")]
    bodies += [("server field published_at", {**good, "published_at": "2024-01-01T00:00:00Z"})]
    for field in ("title", "subtitle", "body", "mark", "url", "urgency", "guid", "tags"):
        for value in WRONG_VALUES:
            body = {**good, field: value}
            if not accepted(body):  # e.g. subtitle=None or "" is fine: no subtitle
                bodies.append((f"{field}={value!r}", body))
    bodies += [(f"tag {tag[:12]!r}", {**good, "tags": [tag]}) for tag in bad_tags()]
    raw = [(name, orjson.dumps(body)) for name, body in bodies]
    raw.append(("urgency 10**30", b'{"title": "t", "tags": ["w"], "urgency": 1' + b"0" * 30 + b"}"))
    raw.append(("urgency 1e400", b'{"title": "t", "tags": ["w"], "urgency": 1e400}'))
    return raw


@pytest.fixture
def counted(redis_url: str, wire_procs: Callable[..., WireProcess]) -> WireProcess:
    return wire_procs("run", "--redis", redis_url, env={"WIRE_LOG_LEVEL": "WARNING"})


JSON = {**AUTH, "Content-Type": "application/json"}
GOOD = orjson.dumps(item())


def expected_submission_error(name: str, raw: bytes) -> tuple[int, str]:
    from wire.core.errors import ValidationError
    from wire.core.items import parse_submission

    try:
        parse_submission(orjson.loads(raw))
    except orjson.JSONDecodeError:
        return 400, "invalid_json"
    except ValidationError as err:
        return 400, err.code
    raise AssertionError(f"{name} is not a bad input")


def expected_message_error(frame: str) -> tuple[str, str]:
    from wire.core.errors import ClientError
    from wire.core.protocol import parse_message

    try:
        parse_message(frame)
    except ClientError as err:
        return "error", err.code
    raise AssertionError(f"{frame[:40]!r} is not a bad message")


def bad_messages() -> list[str]:
    """Client frames that the protocol refuses (JSON-level and field-level)."""
    texts = [raw.decode("utf-8", "replace") for raw in MALFORMED_JSON if raw.strip()]
    texts += ["1", '"ping"', "[]", "null", "true", "{}", '{"type": null}', '{"type": 1}']
    texts += ['{"type": "PING"}', '{"type": "subscribe "}', '{"type": ["ping"]}']
    texts += [orjson.dumps({"type": "x" * 10_000}).decode()]
    a = {"type": "subscribe", "tags": ["a"]}
    messages: list[dict[str, Any]] = [
        {"type": "subscribe"},
        {"type": "unsubscribe"},
        {"type": "subscribe", "tags": "world"},
        {"type": "subscribe", "tags": None},
        {"type": "subscribe", "tags": {"world": 1}},
        {"type": "subscribe", "tags": [1]},
        {"type": "subscribe", "tags": [["world"]]},
        {"type": "subscribe", "tags": nested(200)},
        {"type": "unsubscribe", "tags": [None]},
        {**a, "since": 1},
        {**a, "backfill": -1},
        {**a, "backfill": 501},
        {**a, "backfill": "10"},
        {**a, "backfill": 1.5},
        {**a, "backfill": True},
        {**a, "since": "1-0", "backfill": 5},
        {**a, "compact": "yes"},
        {**a, "compact": 1},
    ]
    messages += [{**a, "since": bad} for bad in BAD_IDS]
    tags = bad_tags()
    messages += [{"type": "subscribe", "tags": ["ok", tag]} for tag in tags]
    messages += [{"type": "unsubscribe", "tags": [tag]} for tag in tags[::4]]
    return texts + [orjson.dumps(m).decode() for m in messages]


class Counting:
    """Bad inputs against one server; every answer is checked and counted."""

    def __init__(self, proc: WireProcess, http: aiohttp.ClientSession) -> None:
        self.proc = proc
        self.http = http
        self.tried = 0
        self.server_errors: list[str] = []
        self.wrong: list[str] = []

    def check(self, name: str, got: tuple[Any, ...], want: tuple[Any, ...]) -> None:
        self.tried += 1
        if isinstance(got[0], int) and got[0] >= 500:
            self.server_errors.append(f"{name}: {got}")
        if got != want:
            self.wrong.append(f"{name}: got {got}, want {want}")

    @property
    def summary(self) -> str:
        return f"bad inputs tried: {self.tried}, 5xx: {len(self.server_errors)}"

    async def http_case(
        self, name: str, method: str, path: str, want: tuple[Any, ...], **kw: Any
    ) -> None:
        if isinstance(kw.get("data"), bytes) and len(kw["data"]) > 1 << 20:
            kw["data"] = io.BytesIO(kw["data"])  # aiohttp warns about large raw bytes
        async with self.http.request(method, self.proc.base + path, **kw) as resp:
            try:
                code = (await resp.json(content_type=None))["error"]["code"]
            except (ValueError, KeyError, TypeError):
                code = "(not a JSON error)"
            self.check(name, (resp.status, code), want)

    async def handshake(self, name: str, query: str, want: tuple[Any, ...]) -> None:
        try:
            async with websockets.connect(f"{self.proc.ws}?{query}", open_timeout=WAIT):
                got: tuple[Any, ...] = (101, "upgraded")
        except InvalidStatus as refused:
            body = orjson.loads(refused.response.body or b"{}")
            got = (refused.response.status_code, body.get("error", {}).get("code"))
        self.check(name, got, want)

    async def message_case(
        self, name: str, frame: str | bytes, want: tuple[Any, ...], *, text: bool | None = None
    ) -> None:
        """One frame on a fresh connection: its answer, and the connection still usable."""
        async with websockets.connect(self.proc.ws, open_timeout=WAIT, max_size=None) as ws:
            await ws.send(frame, text=text)
            try:
                msg = await recv(ws)
                got: tuple[Any, ...] = (msg["type"], msg.get("code"))
                await ws.send('{"type": "ping"}')
                await next_of(ws, "pong")
            except ConnectionClosed as closed:
                got = ("closed", closed.rcvd.code if closed.rcvd else None)
        self.check(name, got, want)

    async def raw_case(self, name: str, request: bytes, want: tuple[Any, ...]) -> None:
        """Bytes on a socket: the status and error code answered."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.proc.port)
        writer.write(request)
        await writer.drain()
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            body = await asyncio.wait_for(reader.readexactly(length), WAIT)
        finally:
            writer.close()
        status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else None
        code = "(plain text)"
        with contextlib.suppress(ValueError, KeyError, TypeError):
            code = orjson.loads(body)["error"]["code"]
        self.check(name, (status, code), want)

    async def protocol_cases(self) -> None:
        """Malformed HTTP: the parser refuses it before the app runs; JSON all the same."""
        post = b"POST /v1/items HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n" % (
            EDITOR_TOKEN.encode()
        )
        plain = (400, "malformed_request")
        for name, request in (
            (
                "request line over 8 KiB",
                b"GET /v1/items?token=%s&tags=%s HTTP/1.1\r\n\r\n" % (SECRET, b"x" * 10_000),
            ),
            ("header over 8 KiB", b"GET /v1/items HTTP/1.1\r\nX-A: %s\r\n\r\n" % (b"a" * 10_000)),
            (
                "200 headers",
                b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % n for n in range(200)) + b"\r\n",
            ),
            ("unknown method", b"BLAH /v1/items HTTP/1.1\r\nHost: x\r\n\r\n"),
            ("TLS hello", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40),
            ("HTTP/9.9", b"GET /v1/items HTTP/9.9\r\nHost: x\r\n\r\n"),
            ("NUL in a header", b"GET /v1/items HTTP/1.1\r\nX-A: a\x00b\r\n\r\n"),
            ("space in a header name", b"GET /v1/items HTTP/1.1\r\nX A: b\r\n\r\n"),
            ("negative length", post + b"Content-Length: -1\r\n\r\n"),
            ("length abc", post + b"Content-Length: abc\r\n\r\n"),
            (
                "length and chunked",
                post + b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            ),
            (
                "bad chunk",
                post + b"Content-Type: application/json\r\nTransfer-Encoding: chunked"
                b"\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
            ),
            ("gzip transfer coding", post + b"Transfer-Encoding: gzip\r\n\r\n"),
        ):
            await self.raw_case(name, request, plain)
        # Codings aiohttp has no decoder for (without optional packages): its
        # parser refuses them before the app runs.
        for coding in (b"br", b"zstd"):
            request = post + b"Content-Type: application/json\r\nContent-Encoding: %s\r\n" % coding
            request += b"Content-Length: %d\r\n\r\n%s" % (len(GOOD), GOOD)
            await self.raw_case(f"coding {coding!r}", request, (415, "unsupported_encoding"))
        for name, headers, want in (
            ("ws without upgrade", b"", (400, "invalid_field")),
            (
                "ws upgrade without key",
                b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n",
                (400, "invalid_field"),
            ),
            (
                "ws bad version",  # RFC 6455 4.2.2: 426 naming version 13
                b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 99\r\n",
                (426, "unsupported_websocket_version"),
            ),
        ):
            request = b"GET /v1/ws HTTP/1.1\r\nHost: x\r\nConnection: close\r\n%s\r\n" % headers
            await self.raw_case(name, request, want)

    async def publish_cases(self) -> None:
        for raw in MALFORMED_JSON:
            want = (400, "invalid_json")
            await self.http_case(
                f"json {raw[:16]!r}", "POST", "/v1/items", want, data=raw, headers=JSON
            )
        for name, raw in submission_cases():
            want = expected_submission_error(name, raw)
            await self.http_case(name, "POST", "/v1/items", want, data=raw, headers=JSON)
        for ctype in ("text/plain", "application/x-www-form-urlencoded", "", "application/jsonx"):
            headers = {**AUTH, "Content-Type": ctype}
            want = (415, "unsupported_media_type")
            await self.http_case(
                f"type {ctype!r}", "POST", "/v1/items", want, data=GOOD, headers=headers
            )
        for coding in ("bogus", "x-gzip", "gzip, gzip", "identity;q=1"):
            headers = {**JSON, "Content-Encoding": coding}
            want = (415, "unsupported_encoding")
            await self.http_case(
                f"coding {coding!r}", "POST", "/v1/items", want, data=GOOD, headers=headers
            )
        huge = orjson.dumps(item(body="x" * 2_000_000))
        want = (413, "payload_too_large")
        await self.http_case("2 MB body", "POST", "/v1/items", want, data=huge, headers=JSON)
        for key in ("k" * 256, "with space", "tab\there", "\u00e9t\u00e9"):
            headers = {**JSON, "Idempotency-Key": key.encode("utf-8").decode("latin-1")}
            want = (400, "invalid_field")
            await self.http_case(
                f"key {key[:10]!r}", "POST", "/v1/items", want, data=GOOD, headers=headers
            )
        reused = {**JSON, "Idempotency-Key": "counted-1"}
        async with self.http.post(self.proc.base + "/v1/items", data=GOOD, headers=reused) as resp:
            assert resp.status == 201
        other = orjson.dumps(item("Other"))
        want = (422, "idempotency_key_reused")
        await self.http_case("key reused", "POST", "/v1/items", want, data=other, headers=reused)
        for auth in (None, "Bearer", "Bearer wrong", "Basic ZWRpdG9yOnRva2Vu", EDITOR_TOKEN):
            headers = {"Content-Type": "application/json"}
            if auth is not None:
                headers["Authorization"] = auth
            want = (401, "unauthorized")
            await self.http_case(
                f"auth {auth!r}", "POST", "/v1/items", want, data=GOOD, headers=headers
            )

    async def read_cases(self) -> None:
        bad_field = (400, "invalid_field")
        for bad in BAD_IDS:
            await self.http_case(
                f"id {bad!r}", "GET", "/v1/items/" + quote(bad, safe=""), bad_field
            )
            await self.http_case(
                f"after {bad!r}", "GET", "/v1/items?after=" + quote(bad), bad_field
            )
        for bad in BAD_LIMITS:
            await self.http_case(
                f"limit {bad[:9]!r}", "GET", "/v1/items?limit=" + quote(bad), bad_field
            )
        for tag in url_tags():
            if tag.strip() and "," not in tag:  # a list in a URL; empty means every tag
                path = "/v1/items?tags=" + quote(tag)
                await self.http_case(f"?tags={tag[:12]!r}", "GET", path, (400, "invalid_tag"))
        for name, method, path in (
            ("unknown item", "GET", "/v1/items/1-0"),
            ("unknown story", "GET", "/v1/stories/nope"),
            ("huge story guid", "GET", "/v1/stories/" + "g" * 5000),
            ("unknown route", "GET", "/v1/nope"),
            ("below an item", "GET", "/v1/items/1-0/x"),
            ("cancel unknown embargo", "DELETE", "/v1/embargoes/nope"),
        ):
            await self.http_case(name, method, path, (404, "not_found"), headers=AUTH)
        for method, path in (
            ("PUT", "/v1/items"),
            ("DELETE", "/v1/items"),
            ("PATCH", "/v1/items/1-0"),
        ):
            want = (405, "method_not_allowed")
            await self.http_case(f"{method} {path}", method, path, want, headers=AUTH)
        await self.http_case(
            "embargoes without token", "GET", "/v1/embargoes", (401, "unauthorized")
        )

    async def withdraw_cases(self) -> None:
        path = "/v1/stories/nope/withdraw"
        for raw in (b"{", b"", b"[1"):
            await self.http_case(
                f"withdraw {raw!r}", "POST", path, (400, "invalid_json"), data=raw, headers=JSON
            )
        body: object
        for body in (
            {},
            [],
            {"reason": 1},
            {"reason": ""},
            {"reason": "  "},
            {"reason": "r" * 1001},
        ):
            raw = orjson.dumps(body)
            want = (400, "invalid_field")
            await self.http_case(
                f"withdraw {raw[:20]!r}", "POST", path, want, data=raw, headers=JSON
            )
        reason = b'{"reason": "r"}'
        await self.http_case(
            "withdraw unknown", "POST", path, (404, "not_found"), data=reason, headers=JSON
        )
        headers = {"Content-Type": "application/json"}
        want = (401, "unauthorized")
        await self.http_case("withdraw no token", "POST", path, want, data=reason, headers=headers)

    async def handshake_cases(self) -> None:
        bad_field = (400, "invalid_field")
        for tag in url_tags():
            if tag.strip() and "," not in tag:
                query = "tags=" + quote(tag)
                await self.handshake(f"ws ?tags={tag[:12]!r}", query, (400, "invalid_tag"))
                path = "/v1/sse?" + query
                await self.http_case(f"sse ?tags={tag[:12]!r}", "GET", path, (400, "invalid_tag"))
        for bad in BAD_IDS:
            query = "tags=a&since=" + quote(bad)
            await self.handshake(f"ws since={bad!r}", query, bad_field)
            await self.http_case(f"sse since={bad!r}", "GET", "/v1/sse?" + query, bad_field)
            headers = {"Last-Event-ID": quote(bad)}
            path = "/v1/sse?tags=a"
            await self.http_case(f"Last-Event-ID {bad!r}", "GET", path, bad_field, headers=headers)
        for bad in ("abc", "-1", "501", "1.5", "99999999999999999999"):
            await self.handshake(f"ws backfill={bad}", "tags=a&backfill=" + bad, bad_field)
        await self.handshake("ws since and backfill", "tags=a&since=1-0&backfill=5", bad_field)

    async def message_cases(self) -> None:
        for text in bad_messages():
            await self.message_case(f"ws {text[:30]!r}", text, expected_message_error(text))
        many = orjson.dumps({"type": "subscribe", "tags": [f"t{n}" for n in range(101)]}).decode()
        await self.message_case("ws 101 tags", many, ("error", "too_many_tags"))
        for payload in (b"{}", b"\x00" * 10, b""):
            await self.message_case(
                f"ws binary {payload[:4]!r}", payload, ("error", "invalid_message")
            )
        await self.message_case("ws 70 KiB frame", "x" * 70_000, ("closed", 1009))
        big = orjson.dumps({"type": "ping", "x": "y" * 2**20}).decode()
        await self.message_case("ws 1 MiB frame", big, ("closed", 1009))
        for raw in (
            b"\xff",
            b'{"type": "ping", "x": "\xc3\x28"}',
            b"\xed\xa0\x80",
            b"\xf4\x90\x80\x80",
        ):
            await self.message_case(f"ws bad utf-8 {raw[:6]!r}", raw, ("closed", 1007), text=True)
        async with websockets.connect(self.proc.ws, open_timeout=WAIT) as ws:
            for n in range(21):
                await ws.send(orjson.dumps({"type": "subscribe", "tags": [f"r{n}"]}).decode())
            last = [await recv(ws) for _ in range(21)][-1]
            want = ("error", "rate_limited")
            self.check("ws 21 subscribes in a second", (last["type"], last.get("code")), want)


async def test_bad_inputs_counted_all_answered_no_5xx_process_alive(
    counted: WireProcess, http: aiohttp.ClientSession
) -> None:
    await counted.ready()
    run = Counting(counted, http)
    await run.protocol_cases()
    await run.publish_cases()
    await run.read_cases()
    await run.withdraw_cases()
    await run.handshake_cases()
    await run.message_cases()
    print(f"\n{run.summary}")
    assert not run.server_errors, f"{run.summary}: {run.server_errors[:10]}"
    assert not run.wrong, f"{run.summary}; {len(run.wrong)} wrong: {run.wrong[:10]}"
    assert run.tried >= 200, run.summary
    assert alive(counted), f"{run.summary}, but the process died"
    errors = [line for line in counted.output().splitlines() if '"level":"error"' in line]
    assert not errors, f"{run.summary}, but the server logged errors: {errors[:3]}"
    assert SECRET.decode() not in counted.output(), "a token from a URL was logged"
    await still_serving(http, counted.base, counted.ws)
