"""Batch publish: ``POST /v1/items`` with a JSON array or ndjson, over real HTTP and Redis.

Each item is answered on its own and in order; the valid ones are written in
one pipeline; per-item idempotency keys; limits; hostile bodies; a WebSocket
subscriber sees a batch once and in order; ``wire publish --file``.
"""

from __future__ import annotations

import asyncio
import io
import os
import re
import signal
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import aiohttp
import orjson
import pytest
import redis
import redis.asyncio as aioredis
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.exceptions import NoScriptError
from websockets.asyncio.client import connect

from publisher.batch import check_element
from tests.conftest import Server, ServerFactory, server_factory
from tests.support import (
    EDITOR_TOKEN,
    ROOT,
    RedisServer,
    get_json,
    item,
    post,
    publish,
    wait_for,
)
from wire.core.errors import ClientError
from wire.core.items import parse_submission
from wire.storage import keys
from wire.storage.pipeline import run_scripts
from wire.storage.scripts import ScriptArgs
from wire.storage.store import body_hash

Http = aiohttp.ClientSession
NDJSON = "application/x-ndjson"
JSON = "application/json"


@pytest.fixture
async def pub(make_server: ServerFactory) -> Server:
    """The publisher alone."""
    return await make_server(gateway=False)


def stream_length(url: str) -> int:
    with redis.Redis.from_url(url) as client:
        return int(client.xlen(keys.STREAM))


async def batch(http: Http, server: Server, elements: list[Any]) -> list[dict[str, Any]]:
    """POST a JSON array batch; its results (the answer must be 200)."""
    status, body = await post(http, server.base, elements)
    assert status == 200, body
    assert set(body) == {"results"}
    results: list[dict[str, Any]] = body["results"]
    assert len(results) == len(elements)
    return results


async def ndjson(
    http: Http, server: Server, body: bytes, content_type: str = NDJSON
) -> tuple[int, str, bytes]:
    """POST a raw body (ndjson unless told); status, Content-Type and raw answer."""
    hdrs = {"Authorization": f"Bearer {EDITOR_TOKEN}", "Content-Type": content_type}
    data = io.BytesIO(body)  # aiohttp warns about large bytes bodies
    async with http.post(server.base + "/v1/items", data=data, headers=hdrs) as resp:
        return resp.status, resp.content_type, await resp.read()


def assert_failed(result: dict[str, Any], status: int, code: str, field: str | None = None) -> None:
    assert set(result) == {"status", "error"}, result
    assert result["status"] == status, result
    assert result["error"]["code"] == code, result
    assert result["error"]["message"]
    assert result["error"].get("field") == field, result


async def test_mixed_batch_is_answered_per_item_in_order(
    pub: Server, http: Http, redis_url: str
) -> None:
    elements: list[Any] = [
        item("One"),
        {"title": "No tags"},
        item("Two", urgency=2),
        item("Bad urgency", urgency=11),
        item("Three", guid="story-3"),
        {"title": "Server field", "tags": ["world"], "id": "1-1"},
    ]
    results = await batch(http, pub, elements)
    assert [r["status"] for r in results] == [201, 400, 201, 400, 201, 400]
    assert_failed(results[1], 400, "invalid_field", "tags")
    assert_failed(results[3], 400, "invalid_field", "urgency")
    assert_failed(results[5], 400, "invalid_field", "id")
    stored = [results[i]["item"] for i in (0, 2, 4)]
    assert [s["title"] for s in stored] == ["One", "Two", "Three"]
    assert stored[1]["urgency"] == 2 and stored[2]["guid"] == "story-3"
    # Stream order is input order, and each answer is the stored item exactly.
    _, listed = await get_json(http, pub.base + "/v1/items?tags=*")
    assert listed["items"] == stored[::-1]
    assert stream_length(redis_url) == 3


async def test_item_keys_make_repeats_idempotent_within_and_across_batches(
    pub: Server, http: Http, redis_url: str
) -> None:
    first = await batch(
        http,
        pub,
        [
            item("Keyed", idempotency_key="k-1"),
            item("Keyed", idempotency_key="k-1"),  # the same key again, same item
            item("Other body", idempotency_key="k-1"),  # the key with another item
            item("Unkeyed"),
        ],
    )
    assert [r["status"] for r in first] == [201, 200, 422, 201]
    assert first[1]["item"] == first[0]["item"]
    assert_failed(first[2], 422, "idempotency_key_reused")
    assert "idempotency_key" not in first[0]["item"]
    again = await batch(http, pub, [item("Keyed", idempotency_key="k-1")])
    assert again == [{"status": 200, "item": first[0]["item"]}]
    # The header and the field share one namespace: the same key and item, sent
    # alone, is a repeat too.
    status, body = await post(http, pub.base, item("Keyed"), headers={"Idempotency-Key": "k-1"})
    assert (status, body) == (200, {"item": first[0]["item"]})
    single = await publish(http, pub.base, "Alone first")
    assert stream_length(redis_url) == 3 and single["title"] == "Alone first"


async def test_bad_item_keys_are_that_items_error(pub: Server, http: Http) -> None:
    results = await batch(
        http,
        pub,
        [
            item("A", idempotency_key=""),
            item("B", idempotency_key=7),
            item("C", idempotency_key="é"),
        ],
    )
    for result in results:
        assert_failed(result, 400, "invalid_field", "idempotency_key")
    status, body = await post(http, pub.base, [item("D")], headers={"Idempotency-Key": "k"})
    assert status == 400 and body["error"]["field"] == "Idempotency-Key"


async def test_too_many_items_are_refused_and_nothing_is_written(
    pub: Server, http: Http, redis_url: str
) -> None:
    status, body = await post(http, pub.base, [item(f"N{i}") for i in range(1001)])
    assert status == 413 and body["error"]["code"] == "payload_too_large"
    assert "1,000" in body["error"]["message"]
    lines = b"".join(orjson.dumps(item(f"N{i}")) + b"\n" for i in range(1001))
    status, _, raw = await ndjson(http, pub, lines)
    assert status == 413 and b"1,000" in raw
    assert stream_length(redis_url) == 0
    full = await batch(http, pub, [item(f"N{i}") for i in range(1000)])
    assert {r["status"] for r in full} == {201}
    assert stream_length(redis_url) == 1000


async def test_ndjson_in_ndjson_out_one_line_per_item(
    pub: Server, http: Http, redis_url: str
) -> None:
    body = (
        orjson.dumps(item("First"))
        + b"\n\n   \r\n"  # blank lines are not items
        + b"{not json\n"
        + orjson.dumps(item("Second", idempotency_key="nd-2"))
        + b"\r\n"
        + b'"a string"\n'
        + orjson.dumps(item("Second", idempotency_key="nd-2"))  # no final newline
    )
    status, content_type, raw = await ndjson(http, pub, body)
    assert status == 200 and content_type == NDJSON
    assert raw.endswith(b"\n")
    results = [orjson.loads(line) for line in raw.splitlines()]
    assert [r["status"] for r in results] == [201, 400, 201, 400, 200]
    assert_failed(results[1], 400, "invalid_json")
    assert_failed(results[3], 400, "invalid_field")
    assert results[4]["item"] == results[2]["item"]
    assert stream_length(redis_url) == 2


async def test_hostile_bodies_get_json_errors_never_500(
    pub: Server, http: Http, redis_url: str
) -> None:
    results = await batch(http, pub, [1, "x", None, [], [item("nested")], {}, True, item("Fine")])
    assert [r["status"] for r in results] == [400] * 7 + [201]
    for result in results[:7]:
        assert result["error"]["code"] in ("invalid_field", "bad_request"), result
    status, body = await post(http, pub.base, [])
    assert status == 400 and "1 to 1,000" in body["error"]["message"]
    status, body = await post(http, pub.base, b'[{"title": "\xff\xfe", "tags": ["x"]}]')
    assert status == 400 and body["error"]["code"] == "invalid_json"
    status, _, raw = await ndjson(http, pub, b"\n \n")
    assert status == 400 and b"1 to 1,000" in raw
    huge = orjson.dumps(item("Huge", body="x" * 90_000))[:-1] + b" " * (1 << 20) + b"}"
    bad_utf8 = b'{"title": "\xc3\x28", "tags": ["x"]}'
    status, _, raw = await ndjson(http, pub, huge + b"\n" + bad_utf8 + b"\n" + b"[]\n")
    assert status == 200
    results = [orjson.loads(line) for line in raw.splitlines()]
    assert_failed(results[0], 413, "payload_too_large")
    assert_failed(results[1], 400, "invalid_json")
    assert results[2]["status"] == 400
    status, _, raw = await ndjson(http, pub, b"\n" * (17 << 20))
    assert status == 413 and b"16,777,216" in raw
    # Within the byte limit, but millions of tiny lines: refused by counting,
    # before they become millions of objects.
    status, _, raw = await ndjson(http, pub, b"a\n" * (4 << 20))
    assert status == 413 and b"10,000 lines" in raw
    # A JSON body, array or not, keeps its 1 MiB limit (refused from its
    # declared length); the answer says how a bigger batch may go.
    status, _, raw = await ndjson(http, pub, b"[" + b"1," * (1 << 19) + b"1]", JSON)
    assert status == 413 and b"1,048,576" in raw and NDJSON.encode() in raw
    assert stream_length(redis_url) == 1


async def test_embargoed_items_in_a_batch_are_accepted_as_alone(pub: Server, http: Http) -> None:
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    results = await batch(
        http,
        pub,
        [
            item("Now"),
            item("Later", guid="emb-1", embargo_until=later, idempotency_key="e-1"),
            item("Later", guid="emb-1", embargo_until=later, idempotency_key="e-1"),
        ],
    )
    assert [r["status"] for r in results] == [201, 202, 200]
    assert "id" not in results[1]["item"] and results[2]["item"] == results[1]["item"]
    status, body = await get_json(
        http, pub.base + "/v1/embargoes", headers={"Authorization": f"Bearer {EDITOR_TOKEN}"}
    )
    assert status == 200 and [e["guid"] for e in body["embargoes"]] == ["emb-1"]


async def test_a_flushed_script_cache_costs_nothing(
    pub: Server, http: Http, redis_url: str
) -> None:
    await batch(http, pub, [item("Warm")])
    with redis.Redis.from_url(redis_url) as client:
        client.script_flush()
    results = await batch(http, pub, [item(f"After flush {i}") for i in range(5)])
    assert {r["status"] for r in results} == {201}
    assert stream_length(redis_url) == 6


async def test_single_writes_after_a_flushed_script_cache_load_it_and_run_once(
    pub: Server, http: Http, redis_url: str
) -> None:
    """A single publish sends EVALSHA alone; NOSCRIPT makes it load the script and run once."""
    await publish(http, pub.base, "Warm")
    with redis.Redis.from_url(redis_url) as client:
        client.script_flush()
    stored = await publish(http, pub.base, "After flush", guid="flushed-story")
    assert stored["version"] == 1
    with redis.Redis.from_url(redis_url) as client:
        client.script_flush()
    async with http.post(
        pub.base + "/v1/stories/flushed-story/withdraw",
        json={"reason": "test"},
        headers={"Authorization": f"Bearer {EDITOR_TOKEN}"},
    ) as resp:
        assert resp.status == 200, await resp.text()
    assert stream_length(redis_url) == 3


async def test_metrics_count_each_item_of_a_batch(pub: Server, http: Http) -> None:
    await batch(http, pub, [item("A"), item("B"), {"title": "bad"}])
    async with http.get(pub.base + "/metrics") as resp:
        text = await resp.text()
    m = re.search(r'^wire_items_published_total\{kind="item"\} ([0-9.]+)$', text, re.M)
    assert m and float(m.group(1)) == 2


async def test_a_subscriber_gets_a_batch_once_and_in_order(server: Server, http: Http) -> None:
    async with connect(server.ws + "?tags=batch", proxy=None) as ws:
        assert orjson.loads(await ws.recv())["type"] == "subscribed"
        results = await batch(
            http, server, [item(f"B{i}", ["batch"]) for i in range(300)] + [item("end", ["batch"])]
        )
        published = [r["item"]["id"] for r in results]
        got: list[str] = []
        while not got or got[-1] != published[-1]:
            msg = orjson.loads(await ws.recv())
            assert msg["type"] == "item", msg
            got.append(msg["item"]["id"])
    assert got == published
    assert [r["item"]["title"] for r in results] == [f"B{i}" for i in range(300)] + ["end"]


# -- wire publish --file ------------------------------------------------------------


async def run_publish(server: Server, *args: str, stdin: bytes | None = None) -> tuple[int, str]:
    env = {**os.environ, "WIRE_URL": server.base, "WIRE_TOKEN": EDITOR_TOKEN}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wire", "publish", *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env, cwd=ROOT,
    )  # fmt: skip
    async with asyncio.timeout(60):
        _, err = await proc.communicate(stdin)
    assert proc.returncode is not None
    return proc.returncode, err.decode()


async def test_publish_file_sends_batches_and_reruns_store_nothing_twice(
    pub: Server, http: Http, tmp_path: Path, redis_url: str
) -> None:
    lines = [orjson.dumps(item(f"L{i}")) for i in range(2500)]
    lines[1700] = b'{"title": "bad", "tags": ["world"], "urgency": 0}'
    path = tmp_path / "many.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    code, err = await run_publish(pub, "--file", str(path))
    assert code == 1, err
    assert "line 1701: 400 invalid_field (urgency)" in err
    assert "2500 items: 2499 published, 0 already published, 1 invalid (line 1701)" in err
    assert stream_length(redis_url) == 2499
    code, err = await run_publish(pub, "--file", str(path))
    assert "0 published, 2499 already published, 1 invalid" in err
    assert stream_length(redis_url) == 2499


async def test_publish_file_takes_a_json_array(
    pub: Server, http: Http, tmp_path: Path, redis_url: str
) -> None:
    path = tmp_path / "items.json"
    path.write_bytes(orjson.dumps([item("J1"), item("J2", guid="j-2")]))
    code, err = await run_publish(pub, "--file", str(path))
    assert code == 0, err
    assert "2 items: 2 published, 0 already published" in err
    code, err = await run_publish(pub, "--file", "-", stdin=path.read_bytes())
    assert code == 0, err
    assert "2 published" in err  # stdin is another source: keys differ
    code, err = await run_publish(pub, "--file", str(path))
    assert code == 0 and "0 published, 2 already published" in err, err
    _, listed = await get_json(http, pub.base + "/v1/items?tags=*")
    assert [i["title"] for i in listed["items"]] == ["J2", "J1", "J2", "J1"]
    path.write_bytes(b'[{"title": "J3", "tags": ["world"]}, 5]')
    code, err = await run_publish(pub, "--file", str(path))
    assert code == 1 and "item 2: 400" in err, err
    path.write_bytes(b"[oops")
    code, err = await run_publish(pub, "--file", str(path))
    assert code == 2 and "not a JSON array" in err, err


# -- property: any JSON element is a Write or a client error, never anything else ----

_scalar = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8)
)
_json = (
    _scalar
    | st.lists(_scalar, max_size=3)
    | st.dictionaries(st.text(max_size=8), _scalar | st.lists(_scalar, max_size=2), max_size=3)
)
_element = st.one_of(
    _json,
    st.fixed_dictionaries(
        {"title": st.text(max_size=20), "tags": st.lists(st.text(max_size=6), max_size=3)},
        optional={"idempotency_key": _json | st.text(max_size=10), "urgency": _json},
    ),
)


@settings(max_examples=300, deadline=None)
@given(_element)
def test_any_element_is_a_write_or_a_client_error(element: object) -> None:
    now = datetime.now(UTC)
    try:
        write = check_element(element, "en", now)
    except ClientError:
        return
    assert isinstance(element, dict)
    item = {k: v for k, v in element.items() if k != "idempotency_key"}
    # The same item alone, with the key as its Idempotency-Key header: the same
    # submission and the same digest, so the two are repeats of each other.
    assert write.sub.title == parse_submission(item, now=now).title
    assert write.key == element.get("idempotency_key")
    assert write.digest == (body_hash(item) if write.key else "")


@pytest.mark.fault
async def test_replica_acks_cover_every_item_of_a_batch(tmp_path: Path, http: Http) -> None:
    """With WIRE_REPLICA_ACKS=1 a batch's items answer 201 only once a replica has them;
    with the replica frozen (SIGSTOP) each is 503, and a retry with the same keys
    stores nothing twice."""
    primary = RedisServer(tmp_path / "primary").start()
    replica = RedisServer(
        tmp_path / "replica", extra=("--replicaof", "127.0.0.1", str(primary.port))
    ).start()
    try:

        def in_sync() -> bool:
            with replica.client() as r:
                return bool(r.info("replication").get("master_link_status") == "up")

        await wait_for(in_sync, "the replica to sync", within=10)
        async with server_factory(primary.url) as make:
            pub = await make(gateway=False, replica_acks=1)
            warm = await batch(
                http, pub, [item(f"R{i}", idempotency_key=f"r-{i}") for i in range(5)]
            )
            assert {r["status"] for r in warm} == {201}
            frozen = [item(f"F{i}", idempotency_key=f"f-{i}") for i in range(10)]
            assert replica.proc is not None
            replica.proc.send_signal(signal.SIGSTOP)
            try:
                refused = await batch(http, pub, frozen)
            finally:
                replica.proc.send_signal(signal.SIGCONT)
            for result in refused:
                assert_failed(result, 503, "unavailable")
            await wait_for(in_sync, "the replica to catch up", within=10)
            after = await batch(http, pub, frozen)
            assert {r["status"] for r in after} == {200}
            with replica.client() as r:
                assert r.xlen(keys.STREAM) == 15
    finally:
        replica.stop()
        primary.stop()


async def test_a_call_that_keeps_failing_noscript_is_its_own_error(redis_url: str) -> None:
    """The pipeline's NOSCRIPT handling: a script Redis cannot have (its sha is not
    that of its text) fails alone, after the retries; the other calls run once, in order."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        good = client.register_script("return redis.call('RPUSH', KEYS[1], ARGV[1])")
        bad = client.register_script("return 0")
        bad.sha = "0" * 40
        calls = [(good, _Push("order", n)) for n in range(3)]
        calls.insert(1, (bad, _Push("order", 99)))
        outcomes = await run_scripts(client, calls)
        assert [o[0] for o in outcomes[:1] + outcomes[2:]] == [1, 2, 3]
        assert isinstance(outcomes[1][0], NoScriptError)
        assert await client.lrange("order", 0, -1) == [b"0", b"1", b"2"]
    finally:
        await client.aclose()


@dataclass(frozen=True, slots=True)
class _Push(ScriptArgs):
    N_KEYS: ClassVar[int] = 1
    key: str
    value: int
