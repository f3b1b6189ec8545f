"""The publisher HTTP API, over real HTTP against a real Redis.

Every field rule and every error status of issue 2, idempotent retries
(including racing ones), retention trimming, Redis outages, and the reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import io
import os
import re
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import aiohttp
import orjson
import pytest
import redis

from tests.conftest import Server, ServerFactory
from tests.support import EDITOR_TOKEN, RedisServer, get_json, item, post, publish

Http = aiohttp.ClientSession
ITEM_KEYS = [
    "id",
    "guid",
    "version",
    "mark",
    "published_at",
    "urgency",
    "title",
    "subtitle",
    "tags",
    "url",
    "body",
]
ID = re.compile(r"\d+-\d+")
MIB = 1024 * 1024


@pytest.fixture
async def pub(make_server: ServerFactory) -> Server:
    """The publisher alone (the gateway's reader plays no part in these tests)."""
    return await make_server(gateway=False)


def stream_length(url: str) -> int:
    """XLEN of the item stream, read straight from Redis."""
    with redis.Redis.from_url(url) as client:
        return int(client.xlen("wire:items"))


def assert_error(body: Any, code: str, field: str | None = None) -> None:
    """``{"error": {"code", "message", "field"?}}`` with this code (and field)."""
    assert set(body) == {"error"}
    error = body["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    if field is None:
        assert "field" not in error
    else:
        assert error["field"] == field


async def items(http: Http, server: Server, query: str = "", **kw: Any) -> list[dict[str, Any]]:
    """GET /v1/items?<query>, expecting 200."""
    status, body = await get_json(http, f"{server.base}/v1/items{query}", **kw)
    assert status == 200, body
    found: list[dict[str, Any]] = body["items"]
    return found


async def raw_exchange(server: Server, request: bytes, *, chunks: int = 0) -> tuple[int, Any]:
    """Send raw HTTP bytes (plus ``chunks`` 64 KiB chunks); return status and JSON body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.settings.port)
    try:
        writer.write(request)
        chunk = b" " * 65536
        for _ in range(chunks):
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        if chunks:
            writer.write(b"0\r\n\r\n")
        # The server may answer and close before reading everything we sent.
        with contextlib.suppress(ConnectionError):
            await asyncio.wait_for(writer.drain(), 10)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        status = int(head.split(b" ", 2)[1])
        found = re.search(rb"(?i)content-length: *(\d+)", head)
        assert found is not None, head
        length = int(found.group(1))
        return status, orjson.loads(await asyncio.wait_for(reader.readexactly(length), 10))
    finally:
        writer.close()


async def wait_until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll ``check`` until it is true, failing after 20 seconds."""
    deadline = time.monotonic() + 20
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


# --- publishing -------------------------------------------------------------------


async def test_publish_returns_the_stored_item(pub: Server, http: Http) -> None:
    before = int(time.time() * 1000)
    status, body = await post(
        http,
        pub.base,
        item("Quake hits coast", ["World/Asia", "science"], urgency=2, mark="Breaking"),
    )
    assert status == 201
    stored = body["item"]
    # Later issues add fields (e.g. pubstatus); these are issue 2's, in this order.
    assert [k for k in stored if k in ITEM_KEYS] == ITEM_KEYS
    assert ID.fullmatch(stored["id"])
    assert int(stored["id"].split("-")[0]) >= before
    assert stored["guid"].startswith("urn:wire:")
    assert stored["version"] == 1
    assert stored["mark"] == "Breaking"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", stored["published_at"])
    assert stored["urgency"] == 2
    assert stored["title"] == "Quake hits coast"
    assert stored["tags"] == ["world/asia", "science"]
    assert stored["subtitle"] is None and stored["url"] is None and stored["body"] is None
    # What was answered is what is stored, under the Redis stream id.
    assert await get_json(http, f"{pub.base}/v1/items/{stored['id']}") == (200, {"item": stored})
    with redis.Redis.from_url(pub.settings.redis_url or "") as client:
        assert [eid.decode() for eid, _ in client.xrange("wire:items")] == [stored["id"]]


async def test_strings_are_stored_trimmed(pub: Server, http: Http) -> None:
    stored = await publish(
        http,
        pub.base,
        title="  Quake  \n",
        tags=["  World  "],
        subtitle="\tA lead  ",
        body="\n Body text \n",
        mark=" Exclusive ",
        url="  https://example.com/quake  ",
        guid="ap-1",
    )
    assert stored["title"] == "Quake"
    assert stored["tags"] == ["world"]
    assert stored["subtitle"] == "A lead"
    assert stored["body"] == "Body text"
    assert stored["mark"] == "Exclusive"
    assert stored["url"] == "https://example.com/quake"
    assert stored["guid"] == "ap-1"


async def test_tags_are_normalized_and_merged(pub: Server, http: Http) -> None:
    stored = await publish(http, pub.base, tags=["New York", "ＮＥＷ  york", "Россия", "भारत"])
    assert stored["tags"] == ["new-york", "россия", "भारत"]


async def test_non_ascii_text_round_trips(pub: Server, http: Http) -> None:
    stored = await publish(http, pub.base, title="Землетрясение 🌍 שלום", body="é\u0301 日本")
    assert stored["title"] == "Землетрясение 🌍 שלום"
    _, body = await get_json(http, f"{pub.base}/v1/items/{stored['id']}")
    assert body["item"]["body"] == "é\u0301 日本"


class BadField(NamedTuple):
    """An item field value the publisher refuses with 400 ``code``, naming ``field``."""

    field: str
    value: Any
    code: str = "invalid_field"

    @property
    def id(self) -> str:
        return f"{self.field}={str(self.value)[:20]!r}"


BAD_FIELDS = [
    BadField("title", None),
    BadField("title", ""),
    BadField("title", "   "),
    BadField("title", "x" * 301),
    BadField("title", 7),
    BadField("title", "two\nlines"),
    BadField("subtitle", "x" * 1001),
    BadField("subtitle", ["x"]),
    BadField("body", "x" * 100_001),
    BadField("mark", "x" * 41),
    BadField("url", "ftp://example.com/x"),
    BadField("url", "/relative"),
    BadField("url", "https://"),
    BadField("urgency", 0),
    BadField("urgency", 10),
    BadField("urgency", "1"),
    BadField("urgency", 2.0),
    BadField("urgency", True),
    BadField("guid", "has space"),
    BadField("guid", "x" * 201),
    BadField("tags", None),
    BadField("tags", []),
    BadField("tags", "world"),
    BadField("tags", [f"t{i}" for i in range(21)]),
    BadField("tags", ["world", ""], "invalid_tag"),
    BadField("tags", ["a.b"], "invalid_tag"),
    BadField("tags", ["world//europe"], "invalid_tag"),
    BadField("tags", ["a" * 65], "invalid_tag"),
    BadField("tags", ["a\u200bb"], "invalid_tag"),
    BadField("tags", ["\u202eworld"], "invalid_tag"),
    BadField("tags", [5], "invalid_tag"),
    BadField("id", "1-0"),
    BadField("version", 2),
    BadField("published_at", "2024-01-01T00:00:00.000Z"),
    BadField("color", "red"),
]


@pytest.mark.parametrize(("field", "value", "code"), BAD_FIELDS, ids=[c.id for c in BAD_FIELDS])
async def test_invalid_field_is_400_naming_it_and_stores_nothing(
    pub: Server, http: Http, field: str, value: Any, code: str
) -> None:
    body = {**item(), field: value}
    status, answer = await post(http, pub.base, body)
    assert status == 400
    assert_error(answer, code, field)
    assert stream_length(pub.settings.redis_url or "") == 0


async def test_field_limits_are_inclusive(pub: Server, http: Http) -> None:
    stored = await publish(
        http,
        pub.base,
        title="t" * 300,
        tags=[f"tag{i}" for i in range(20)],
        subtitle="s" * 1000,
        body="b" * 100_000,
        mark="m" * 40,
        urgency=9,
    )
    assert len(stored["title"]) == 300 and len(stored["tags"]) == 20
    assert len(stored["body"]) == 100_000


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"{",
        b"{'title': 'x'}",
        b'{"title": "x", "tags": ["a"],}',
        b"NaN",
        b'{"title": "\xff\xfe", "tags": ["a"]}',  # not UTF-8
        b'{"title": "\\ud800", "tags": ["a"]}',  # lone surrogate
        b"[" * 2000 + b"]" * 2000,  # deeper than the parser allows
    ],
    ids=["empty", "truncated", "quotes", "trailing-comma", "nan", "utf8", "surrogate", "deep"],
)
async def test_invalid_json_is_400(pub: Server, http: Http, raw: bytes) -> None:
    status, answer = await post(http, pub.base, raw)
    assert status == 400
    assert_error(answer, "invalid_json")


@pytest.mark.parametrize("raw", [b"[]", b'"title"', b"42", b"null"])
async def test_json_that_is_not_an_object_is_400(pub: Server, http: Http, raw: bytes) -> None:
    status, answer = await post(http, pub.base, raw)
    assert status == 400
    assert_error(answer, "invalid_field")


async def test_crlf_body_is_stored_with_newlines(pub: Server, http: Http) -> None:
    stored = await publish(http, pub.base, body="line one\r\nline two")
    assert stored["body"] == "line one\nline two"


# --- authentication -------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Bearer {EDITOR_TOKEN}x"},
        {"Authorization": f"Basic {EDITOR_TOKEN}"},
        {"Authorization": EDITOR_TOKEN},
        {"Authorization": "Bearer "},
    ],
    ids=["none", "wrong", "longer", "basic", "no-scheme", "empty"],
)
async def test_publish_needs_an_editor_token(
    pub: Server, http: Http, headers: dict[str, str]
) -> None:
    status, answer = await post(http, pub.base, item(), token=None, headers=headers)
    assert status == 401
    assert_error(answer, "unauthorized")
    assert stream_length(pub.settings.redis_url or "") == 0


async def test_token_is_checked_before_the_body(pub: Server, http: Http) -> None:
    status, answer = await post(http, pub.base, b"{not json", token="wrong")
    assert status == 401
    assert_error(answer, "unauthorized")


async def test_editor_token_is_not_taken_from_the_query(pub: Server, http: Http) -> None:
    url = f"{pub.base}/v1/items?token={EDITOR_TOKEN}"
    headers = {"Content-Type": "application/json"}
    async with http.post(url, data=orjson.dumps(item()), headers=headers) as resp:
        assert resp.status == 401


async def test_any_configured_editor_token_works(make_server: ServerFactory, http: Http) -> None:
    server = await make_server(gateway=False, editor_tokens=("desk-a", "desk-b"))
    for token in ("desk-a", "desk-b"):
        status, _ = await post(http, server.base, item(), token=token)
        assert status == 201
    status, _ = await post(http, server.base, item(), token=EDITOR_TOKEN)
    assert status == 401


async def test_no_configured_tokens_means_no_publishing(
    make_server: ServerFactory, http: Http
) -> None:
    server = await make_server(gateway=False, editor_tokens=())
    status, answer = await post(http, server.base, item())
    assert status == 401
    assert_error(answer, "unauthorized")


async def test_reads_are_public_without_subscriber_tokens(pub: Server, http: Http) -> None:
    stored = await publish(http, pub.base)
    assert await items(http, pub) == [stored]
    headers = {"Authorization": "Bearer anything"}
    assert await items(http, pub, headers=headers) == [stored]
    status, _ = await get_json(http, f"{pub.base}/v1/items/{stored['id']}")
    assert status == 200


async def test_reads_need_a_token_when_subscriber_tokens_are_set(
    make_server: ServerFactory, http: Http
) -> None:
    server = await make_server(gateway=False, subscriber_tokens=("reader-1",))
    stored = await publish(http, server.base)
    for path in ("/v1/items", f"/v1/items/{stored['id']}"):
        url = server.base + path
        status, answer = await get_json(http, url)
        assert status == 401
        assert_error(answer, "unauthorized")
        status, _ = await get_json(http, url, headers={"Authorization": "Bearer nope"})
        assert status == 401
        for kw in (
            {"headers": {"Authorization": "Bearer reader-1"}},
            {"params": {"token": "reader-1"}},  # for EventSource-style clients
            {"headers": {"Authorization": f"Bearer {EDITOR_TOKEN}"}},  # editors may read
        ):
            status, _ = await get_json(http, url, **kw)
            assert status == 200, kw


# --- routes, methods, media types, sizes -----------------------------------------------


@pytest.mark.parametrize("path", ["/", "/v1", "/v1/item", "/v2/items", "/v1/items/1-0/x"])
async def test_unknown_route_is_404(pub: Server, http: Http, path: str) -> None:
    status, answer = await get_json(http, pub.base + path)
    assert status == 404
    assert_error(answer, "not_found")


async def test_unknown_id_is_404(pub: Server, http: Http) -> None:
    stored = await publish(http, pub.base)
    ms, seq = stored["id"].split("-")
    for missing in ("0-1", f"{ms}-{int(seq) + 1}", f"{int(ms) + 1}-0"):
        status, answer = await get_json(http, f"{pub.base}/v1/items/{missing}")
        assert status == 404
        assert_error(answer, "not_found")


@pytest.mark.parametrize(
    "raw", ["abc", "1-", "-1", "1-2-3", "1.5", "١٢٣-٠", "99999999999999999999999-0", "1-0%20"]
)
async def test_malformed_id_is_400(pub: Server, http: Http, raw: str) -> None:
    status, answer = await get_json(http, f"{pub.base}/v1/items/{raw}")
    assert status == 400
    assert_error(answer, "invalid_field", "id")


async def test_bare_millisecond_id_means_sequence_zero(pub: Server, http: Http) -> None:
    stored = await publish(http, pub.base)
    ms, seq = stored["id"].split("-")
    assert seq == "0"  # the first entry of an empty stream
    assert await get_json(http, f"{pub.base}/v1/items/{ms}") == (200, {"item": stored})


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("DELETE", "/v1/items"),
        ("PUT", "/v1/items"),
        ("PATCH", "/v1/items/1-0"),
        ("POST", "/v1/items/1-0"),
    ],
)
async def test_wrong_method_is_405(pub: Server, http: Http, method: str, path: str) -> None:
    async with http.request(method, pub.base + path) as resp:
        assert resp.status == 405
        assert "GET" in resp.headers.get("Allow", "")
        assert_error(await resp.json(), "method_not_allowed")


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"],
)
async def test_wrong_content_type_is_415(pub: Server, http: Http, content_type: str | None) -> None:
    headers = {"Authorization": f"Bearer {EDITOR_TOKEN}"}
    if content_type:
        headers["Content-Type"] = content_type
    async with http.post(
        pub.base + "/v1/items", data=orjson.dumps(item()), headers=headers
    ) as resp:
        assert resp.status == 415
        assert_error(await resp.json(), "unsupported_media_type")
    assert stream_length(pub.settings.redis_url or "") == 0


async def test_json_with_charset_is_accepted(pub: Server, http: Http) -> None:
    status, _ = await post(
        http, pub.base, item(), headers={"Content-Type": "application/json; charset=utf-8"}
    )
    assert status == 201


def _padded(size: int) -> bytes:
    """A valid item body of exactly ``size`` bytes (JSON allows trailing whitespace)."""
    body = orjson.dumps(item())
    return body + b" " * (size - len(body))


async def post_large(http: Http, server: Server, body: bytes) -> tuple[int, Any]:
    """POST a large body with its Content-Length (BytesIO: aiohttp warns on big bytes)."""
    headers = {"Authorization": f"Bearer {EDITOR_TOKEN}", "Content-Type": "application/json"}
    async with http.post(server.base + "/v1/items", data=io.BytesIO(body), headers=headers) as resp:
        assert resp.headers.get("Content-Type", "").startswith("application/json")
        return resp.status, await resp.json()


async def test_body_of_exactly_one_mib_is_accepted(pub: Server, http: Http) -> None:
    status, _ = await post_large(http, pub, _padded(MIB))
    assert status == 201


async def test_body_over_one_mib_is_413(pub: Server, http: Http) -> None:
    status, answer = await post_large(http, pub, _padded(MIB + 1))
    assert status == 413
    assert_error(answer, "payload_too_large")
    assert stream_length(pub.settings.redis_url or "") == 0


async def test_declared_length_over_one_mib_is_413_before_the_body(pub: Server) -> None:
    # Nothing of the body is sent: the server must answer from the headers alone.
    request = (
        b"POST /v1/items HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + EDITOR_TOKEN.encode() + b"\r\n"
        b"Content-Length: 5000000\r\n\r\n"
    )
    status, answer = await raw_exchange(pub, request)
    assert status == 413
    assert_error(answer, "payload_too_large")


async def test_chunked_body_over_one_mib_is_413(pub: Server) -> None:
    request = (
        b"POST /v1/items HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + EDITOR_TOKEN.encode() + b"\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    status, answer = await raw_exchange(pub, request, chunks=17)  # 17 * 64 KiB > 1 MiB
    assert status == 413
    assert_error(answer, "payload_too_large")
    assert stream_length(pub.settings.redis_url or "") == 0


async def test_compressed_body_limit_counts_decompressed_bytes(pub: Server, http: Http) -> None:
    headers = {
        "Authorization": f"Bearer {EDITOR_TOKEN}",
        "Content-Type": "application/json",
        "Content-Encoding": "gzip",
    }
    small = gzip.compress(orjson.dumps(item("Zipped")))
    async with http.post(pub.base + "/v1/items", data=small, headers=headers) as resp:
        assert resp.status == 201
        assert (await resp.json())["item"]["title"] == "Zipped"
    bomb = gzip.compress(_padded(8 * MIB))  # about 8 KiB on the wire
    async with http.post(pub.base + "/v1/items", data=bomb, headers=headers) as resp:
        assert resp.status == 413
        assert_error(await resp.json(), "payload_too_large")
    assert stream_length(pub.settings.redis_url or "") == 1


async def test_small_chunked_body_is_accepted(pub: Server, http: Http) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        body = orjson.dumps(item("Chunked"))
        yield body[:5]
        yield body[5:]

    headers = {"Authorization": f"Bearer {EDITOR_TOKEN}", "Content-Type": "application/json"}
    async with http.post(pub.base + "/v1/items", data=chunks(), headers=headers) as resp:
        assert resp.status == 201
        assert (await resp.json())["item"]["title"] == "Chunked"


# --- idempotency -------------------------------------------------------------------


async def test_idempotent_repeat_answers_200_with_the_same_item(pub: Server, http: Http) -> None:
    key = {"Idempotency-Key": "story-42-attempt"}
    status, first = await post(http, pub.base, item("Once"), headers=key)
    assert status == 201
    status, again = await post(http, pub.base, item("Once"), headers=key)
    assert status == 200
    assert again == first
    assert stream_length(pub.settings.redis_url or "") == 1
    assert [i["id"] for i in await items(http, pub)] == [first["item"]["id"]]


async def test_idempotency_compares_json_not_bytes(pub: Server, http: Http) -> None:
    key = {"Idempotency-Key": "k1"}
    status, first = await post(http, pub.base, b'{"title": "Once", "tags": ["world"]}', headers=key)
    assert status == 201
    status, again = await post(http, pub.base, b'{"tags":["world"],"title":"Once"}', headers=key)
    assert (status, again) == (200, first)


async def test_ten_racing_identical_requests_store_one_item(pub: Server, http: Http) -> None:
    key = {"Idempotency-Key": "race-1"}
    answers = await asyncio.gather(
        *(post(http, pub.base, item("Race"), headers=key) for _ in range(10))
    )
    assert sorted(status for status, _ in answers) == [200] * 9 + [201]
    assert len({orjson.dumps(body) for _, body in answers}) == 1
    assert stream_length(pub.settings.redis_url or "") == 1


async def test_same_key_different_body_is_422(pub: Server, http: Http) -> None:
    key = {"Idempotency-Key": "k2"}
    status, first = await post(http, pub.base, item("First"), headers=key)
    assert status == 201
    status, answer = await post(http, pub.base, item("Second"), headers=key)
    assert status == 422
    assert_error(answer, "idempotency_key_reused")
    assert await items(http, pub) == [first["item"]]


async def test_different_keys_store_separate_items(pub: Server, http: Http) -> None:
    for key in ("a", "b"):
        status, _ = await post(http, pub.base, item("Same"), headers={"Idempotency-Key": key})
        assert status == 201
    assert stream_length(pub.settings.redis_url or "") == 2


async def test_rejected_request_does_not_use_up_its_key(pub: Server, http: Http) -> None:
    key = {"Idempotency-Key": "k3"}
    status, _ = await post(http, pub.base, item(urgency=12), headers=key)
    assert status == 400
    status, _ = await post(http, pub.base, item(), headers=key)
    assert status == 201


@pytest.mark.parametrize("key", ["", "has space", "x" * 256])
async def test_malformed_idempotency_key_is_400(pub: Server, http: Http, key: str) -> None:
    status, answer = await post(http, pub.base, item(), headers={"Idempotency-Key": key})
    assert status == 400
    assert_error(answer, "invalid_field", "Idempotency-Key")
    assert stream_length(pub.settings.redis_url or "") == 0


# --- reads -----------------------------------------------------------------------------


async def test_latest_items_newest_first(pub: Server, http: Http) -> None:
    assert await items(http, pub) == []
    published = [await publish(http, pub.base, title=f"n{i}") for i in range(5)]
    assert await items(http, pub) == published[::-1]
    assert await items(http, pub, "?limit=2") == published[:2:-1]


async def test_after_reads_oldest_first(pub: Server, http: Http) -> None:
    published = [await publish(http, pub.base, title=f"n{i}") for i in range(5)]
    first = published[0]["id"]
    assert await items(http, pub, f"?after={first}") == published[1:]
    assert await items(http, pub, f"?after={first}&limit=2") == published[1:3]
    assert await items(http, pub, "?after=0-0") == published
    assert await items(http, pub, "?after=0") == published
    assert await items(http, pub, f"?after={published[-1]['id']}") == []


async def test_default_limit_is_50_and_max_500(pub: Server, http: Http) -> None:
    sem = asyncio.Semaphore(10)

    async def one(i: int) -> None:
        async with sem:
            await publish(http, pub.base, title=f"n{i}")

    await asyncio.gather(*(one(i) for i in range(60)))
    assert len(await items(http, pub)) == 50
    assert len(await items(http, pub, "?limit=1")) == 1
    assert len(await items(http, pub, "?limit=500")) == 60
    assert len(await items(http, pub, "?after=0&limit=500")) == 60


@pytest.mark.parametrize("limit", ["0", "501", "x", "-1", "1.5", "", "²", "١", "9" * 5000])
async def test_bad_limit_is_400(pub: Server, http: Http, limit: str) -> None:
    for query in (f"?limit={limit}", f"?after=0&limit={limit}"):
        status, answer = await get_json(http, f"{pub.base}/v1/items{query}")
        assert status == 400
        assert_error(answer, "invalid_field", "limit")


@pytest.mark.parametrize("after", ["x", "1-", "-5", "1-2-3", "١٢٣"])
async def test_bad_after_is_400(pub: Server, http: Http, after: str) -> None:
    status, answer = await get_json(http, f"{pub.base}/v1/items", params={"after": after})
    assert status == 400
    assert_error(answer, "invalid_field", "after")


async def test_tag_filters_are_hierarchical(pub: Server, http: Http) -> None:
    france = await publish(http, pub.base, tags=["world/europe/france"])
    world = await publish(http, pub.base, tags=["world"])
    asia = await publish(http, pub.base, tags=["world/asia", "tech"])
    tech = await publish(http, pub.base, tags=["tech/ai"])
    russia = await publish(http, pub.base, tags=["Россия"])

    async def ids(query: str) -> list[str]:
        return [i["id"] for i in await items(http, pub, query)]

    assert await ids("?tags=world") == [asia["id"], world["id"], france["id"]]
    assert await ids("?tags=world/europe") == [france["id"]]
    assert await ids("?tags=WORLD/Europe/France") == [france["id"]]
    assert await ids("?tags=world/europe/france/paris") == []
    assert await ids("?tags=europe") == []
    assert await ids("?tags=tech") == [tech["id"], asia["id"]]
    assert await ids("?tags=tech/ai,world/europe") == [tech["id"], france["id"]]
    assert await ids("?tags=россия") == [russia["id"]]
    assert await ids("?tags=*") == [i["id"] for i in (russia, tech, asia, world, france)]
    assert await ids("?tags=") == [i["id"] for i in (russia, tech, asia, world, france)]
    assert await ids(f"?tags=world&after={france['id']}") == [world["id"], asia["id"]]
    assert await ids("?tags=world&limit=1") == [asia["id"]]


@pytest.mark.parametrize("tags", ["a.b", "world//x", "a\u200bb", "x" * 65])
async def test_bad_tag_filter_is_400(pub: Server, http: Http, tags: str) -> None:
    status, answer = await get_json(http, f"{pub.base}/v1/items", params={"tags": tags})
    assert status == 400
    assert_error(answer, "invalid_tag", "tags")


async def test_rare_tag_is_found_behind_many_others(pub: Server, http: Http) -> None:
    # More non-matching items than one page of the store's scan (1,000).
    rare = await publish(http, pub.base, tags=["rare"])
    sem = asyncio.Semaphore(20)

    async def one(i: int) -> None:
        async with sem:
            await publish(http, pub.base, title=f"n{i}", tags=["common"])

    await asyncio.gather(*(one(i) for i in range(1100)))
    late = await publish(http, pub.base, tags=["rare"])
    assert [i["id"] for i in await items(http, pub, "?tags=rare")] == [late["id"], rare["id"]]
    assert [i["id"] for i in await items(http, pub, "?tags=rare&after=0")] == [
        rare["id"],
        late["id"],
    ]


# --- retention -------------------------------------------------------------------------


async def test_retention_by_count_bounds_the_stream(make_server: ServerFactory, http: Http) -> None:
    server = await make_server(gateway=False, max_items=100)
    published = [await publish(http, server.base, title=f"n{i}") for i in range(400)]
    length = stream_length(server.settings.redis_url or "")
    # Approximate trimming (MAXLEN ~) removes whole stream nodes: at least
    # max_items remain, and at most one node (<= 100 entries) more.
    assert 100 <= length < 200
    kept = await items(http, server, "?after=0&limit=500")
    assert len(kept) == length
    assert kept == published[-length:]
    status, _ = await get_json(http, f"{server.base}/v1/items/{published[0]['id']}")
    assert status == 404


async def test_retention_by_age_drops_old_items(make_server: ServerFactory, http: Http) -> None:
    # 1e-9 days is under a millisecond: every item is "old" once the clock
    # moves on, so each publish trims the stream's complete old nodes.
    server = await make_server(gateway=False, retention_days=1e-9)
    published = [await publish(http, server.base, title=f"n{i}") for i in range(250)]
    length = stream_length(server.settings.redis_url or "")
    assert length < 250
    status, _ = await get_json(http, f"{server.base}/v1/items/{published[0]['id']}")
    assert status == 404
    kept = await items(http, server, "?after=0&limit=500")
    assert kept == published[-length:]
    assert kept[-1] == published[-1]


# --- health and Redis outages ------------------------------------------------------------


async def test_healthz_and_readyz(make_server: ServerFactory, http: Http) -> None:
    pub_only = await make_server(gateway=False)
    assert await get_json(http, pub_only.base + "/healthz") == (200, {"status": "ok"})
    status, body = await get_json(http, pub_only.base + "/readyz")
    assert status == 200
    assert body["status"] == "ready" and body["checks"]["redis"] is True
    both = await make_server()

    async def ready() -> bool:
        status, _ = await get_json(http, both.base + "/readyz")
        return status == 200

    await wait_until(ready, "the combined app to be ready")
    status, body = await get_json(http, both.base + "/readyz")
    assert body["checks"]["redis"] is True and body["status"] == "ready"


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis this test may kill: AOF with fsync always, so a kill -9 loses nothing."""
    server = RedisServer(tmp_path / "redis", appendonly=True, appendfsync="always").start()
    yield server
    if server.proc is not None and server.proc.poll() is None:
        os.kill(server.proc.pid, signal.SIGCONT)
    server.stop()


async def test_redis_down_is_503_and_nothing_is_half_written(
    make_server: ServerFactory, http: Http, own_redis: RedisServer
) -> None:
    server = await make_server(gateway=False, redis_url=own_redis.url)
    first = await publish(http, server.base, title="Before")
    own_redis.kill()

    key = {"Idempotency-Key": "during-outage"}
    status, answer = await post(http, server.base, item("During"), headers=key)
    assert status == 503
    assert_error(answer, "unavailable")
    for path in ("/v1/items", f"/v1/items/{first['id']}", "/v1/items?after=0"):
        status, answer = await get_json(http, server.base + path)
        assert status == 503, path
        assert_error(answer, "unavailable")
    status, body = await get_json(http, server.base + "/readyz")
    assert status == 503
    assert body["status"] == "unavailable" and body["checks"]["redis"] is False
    assert await get_json(http, server.base + "/healthz") == (200, {"status": "ok"})
    # Bad input is still judged without Redis.
    status, _ = await post(http, server.base, item(urgency=0))
    assert status == 400

    own_redis.start()

    async def ready() -> bool:
        status, _ = await get_json(http, server.base + "/readyz")
        return status == 200

    await wait_until(ready, "the publisher to reconnect")
    assert await items(http, server) == [first]
    # The failed publish left nothing behind, not even its idempotency record.
    status, answer = await post(http, server.base, item("During"), headers=key)
    assert status == 201
    assert await items(http, server) == [answer["item"], first]


async def test_stalled_redis_is_503_not_a_hang(
    make_server: ServerFactory, http: Http, own_redis: RedisServer
) -> None:
    server = await make_server(gateway=False, redis_url=own_redis.url)
    await publish(http, server.base, title="Before")
    assert own_redis.proc is not None
    os.kill(own_redis.proc.pid, signal.SIGSTOP)
    try:
        key = {"Idempotency-Key": "during-stall"}
        async with asyncio.timeout(30):  # the publisher gives up on Redis after 5 s
            status, answer = await post(http, server.base, item("During"), headers=key)
        assert status == 503
        assert_error(answer, "unavailable")
    finally:
        os.kill(own_redis.proc.pid, signal.SIGCONT)

    # The stalled Redis may still run the script it had received. Whether or
    # not it did, a retry with the same key yields exactly one item.
    async def ready() -> bool:
        status, _ = await get_json(http, server.base + "/readyz")
        return status == 200

    await wait_until(ready, "the publisher to recover")
    status, answer = await post(http, server.base, item("During"), headers=key)
    assert status in (200, 201)
    titles = [i["title"] for i in await items(http, server)]
    assert titles == ["During", "Before"]
