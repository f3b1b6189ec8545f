"""A Redis that is up but will not serve: what production Redis really does.

Out of memory under ``noeviction``, a primary demoted to a read-only replica
(a failover), a script running past ``busy-reply-threshold`` (BUSY): each
answers an error reply instead of dropping the connection. Every request
must then get a clear 503 JSON error (never a 500), write nothing, and work
again once Redis does; reads that need no memory keep working under OOM.
Each test runs its own redis-server, whose configuration it changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import redis
import websockets
from websockets.exceptions import ConnectionClosed

from tests.conftest import server_factory
from tests.support import (
    EDITOR_TOKEN,
    RedisServer,
    eventually,
    get_json,
    item,
    post,
    wait_for,
)
from wire.storage import keys

ADMIN = "admin-token-for-tests"
EDITOR = {"Authorization": f"Bearer {EDITOR_TOKEN}"}
ADMINS = {"Authorization": f"Bearer {ADMIN}"}
SETTINGS: dict[str, Any] = {"admin_tokens": (ADMIN,), "webhook_allow_private": True}
HOOK = {"url": "http://127.0.0.1:9/hook", "tags": ["world"]}


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


async def call(
    http: aiohttp.ClientSession, method: str, url: str, **kw: Any
) -> tuple[int, Any]:
    """Any request: its status and decoded JSON body (every answer here is JSON)."""
    async with http.request(method, url, **kw) as resp:
        return resp.status, orjson.loads(await resp.read())


def assert_unavailable(answer: tuple[int, Any], what: str) -> None:
    status, body = answer
    assert status == 503, (what, answer)
    assert body["error"]["code"] == "unavailable", (what, answer)


async def test_out_of_memory_refuses_admin_writes_with_503_and_reads_still_work(
    own_redis: RedisServer, http: aiohttp.ClientSession
) -> None:
    async with server_factory(own_redis.url) as make:
        wire = await make(**SETTINGS)
        base = wire.base
        status, body = await post(http, base, item("Kept", guid="kept"))
        assert status == 201, body
        status, made = await call(http, "POST", f"{base}/v1/webhooks", json=HOOK, headers=ADMINS)
        assert status == 201, made
        hook = made["webhook"]["id"]
        with own_redis.client() as r:
            r.config_set("maxmemory-policy", "noeviction")
            r.config_set("maxmemory", 1)
            try:
                created = await call(
                    http, "POST", f"{base}/v1/webhooks", json=HOOK, headers=ADMINS
                )
                assert_unavailable(created, "webhook creation")
                paused = await call(
                    http, "POST", f"{base}/v1/webhooks/{hook}/pause", headers=ADMINS
                )
                assert_unavailable(paused, "webhook pause")
                # Nothing of either was written.
                assert r.scard(keys.WEBHOOKS) == 1
                assert r.hget(keys.webhook(hook), "status") == b"active"
                # Reads need no memory: a story's page is served as before.
                status, story = await get_json(http, f"{base}/v1/stories/kept")
                assert status == 200, story
                assert story["story"]["current"]["title"] == "Kept"
                status, ready = await get_json(http, f"{base}/readyz")
                assert status == 200, ready
            finally:
                r.config_set("maxmemory", 0)
        created = await call(http, "POST", f"{base}/v1/webhooks", json=HOOK, headers=ADMINS)
        assert created[0] == 201, created
        paused = await call(http, "POST", f"{base}/v1/webhooks/{hook}/pause", headers=ADMINS)
        assert paused[0] == 200 and paused[1]["webhook"]["status"] == "paused", paused


async def test_a_read_only_replica_refuses_every_write_with_503_then_recovers(
    own_redis: RedisServer, http: aiohttp.ClientSession
) -> None:
    """The primary demoted at runtime (as a failover does): it keeps its data
    and answers reads, and refuses writes with READONLY."""
    async with server_factory(own_redis.url) as make:
        wire = await make(**SETTINGS)
        base = wire.base
        due = (datetime.now(UTC) + timedelta(days=1)).isoformat()
        held = item("Held", guid="held", embargo_until=due)
        status, body = await post(http, base, held)
        assert status == 202, body
        status, made = await call(http, "POST", f"{base}/v1/webhooks", json=HOOK, headers=ADMINS)
        assert status == 201, made
        hook = made["webhook"]["id"]
        with own_redis.client() as r:
            # A primary nobody listens on: the replica keeps what it holds.
            r.execute_command("REPLICAOF", "127.0.0.1", "1")
            try:
                answers = {
                    "cancel": await call(
                        http, "DELETE", f"{base}/v1/embargoes/held", headers=EDITOR
                    ),
                    "create": await call(
                        http, "POST", f"{base}/v1/webhooks", json=HOOK, headers=ADMINS
                    ),
                    "delete": await call(
                        http, "DELETE", f"{base}/v1/webhooks/{hook}", headers=ADMINS
                    ),
                    "publish": await post(http, base, item("Refused")),
                }
                for what, answer in answers.items():
                    assert_unavailable(answer, what)
                assert r.zcard(keys.EMBARGOES) == 1 and r.scard(keys.WEBHOOKS) == 1
                status, pending = await get_json(http, f"{base}/v1/embargoes", headers=EDITOR)
                assert status == 200 and len(pending["embargoes"]) == 1, pending
            finally:
                r.execute_command("REPLICAOF", "NO", "ONE")
        cancelled = await call(http, "DELETE", f"{base}/v1/embargoes/held", headers=EDITOR)
        assert cancelled == (200, {"cancelled": "held"}), cancelled
        deleted = await call(http, "DELETE", f"{base}/v1/webhooks/{hook}", headers=ADMINS)
        assert deleted[0] == 200, deleted


def busy_script(port: int, started: threading.Event) -> threading.Thread:
    """A script that loops until ``SCRIPT KILL`` (run in a thread: it never answers)."""

    def run() -> None:
        with redis.Redis(port=port) as r:
            started.set()
            with contextlib.suppress(redis.ResponseError):  # killed
                r.eval("while true do end", 0)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def is_busy(port: int) -> bool:
    with redis.Redis(port=port) as r:
        try:
            r.ping()
        except redis.ResponseError as err:
            return str(err).startswith("BUSY")
        return False


async def test_a_busy_script_elsewhere_is_503_everywhere_then_everything_recovers(
    own_redis: RedisServer, http: aiohttp.ClientSession
) -> None:
    async with server_factory(own_redis.url) as make:
        publisher = await make(gateway=False, **SETTINGS)
        for n in range(3):
            status, body = await post(http, publisher.base, item(f"Before {n}"))
            assert status == 201, body
        wire = await make(**SETTINGS)
        base = wire.base
        with own_redis.client() as r:
            r.config_set("busy-reply-threshold", 20)
        started = threading.Event()
        thread = busy_script(own_redis.port, started)
        await wait_for(lambda: started.is_set() and is_busy(own_redis.port), "Redis to be BUSY")
        try:
            answers = {
                "items": await call(http, "GET", f"{base}/v1/items"),
                "story": await call(http, "GET", f"{base}/v1/stories/nope"),
                "embargoes": await call(http, "GET", f"{base}/v1/embargoes", headers=EDITOR),
                "webhooks": await call(http, "GET", f"{base}/v1/webhooks", headers=ADMINS),
                "create": await call(
                    http, "POST", f"{base}/v1/webhooks", json=HOOK, headers=ADMINS
                ),
                "publish": await post(http, base, item("Refused")),
            }
            for what, answer in answers.items():
                assert_unavailable(answer, what)
            status, ready = await get_json(http, f"{base}/readyz")
            assert status == 503 and ready["checks"]["redis"] is False, ready
            # A resume that needs history from Redis: "retry later", not "internal error".
            async with websockets.connect(wire.ws + "?tags=world&since=0") as ws:
                with pytest.raises(ConnectionClosed) as closed:
                    while True:
                        await asyncio.wait_for(ws.recv(), 10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013, closed.value
        finally:
            with redis.Redis(port=own_redis.port) as killer:
                killer.script_kill()
            await asyncio.to_thread(thread.join, 10)
        await eventually(
            lambda: get_json(http, f"{base}/readyz"), lambda a: a[0] == 200, "readyz to recover"
        )
        status, listed = await get_json(http, f"{base}/v1/items")
        assert status == 200 and len(listed["items"]) == 3, listed
        async with websockets.connect(wire.ws + "?tags=world&since=0") as ws:
            got: list[str] = []
            while len(got) < 4:
                msg = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
                if msg.get("type") == "item":
                    got.append(msg["item"]["title"])
                    if len(got) == 3:
                        status, body = await post(http, base, item("After"))
                        assert status == 201, body
        assert got == ["Before 0", "Before 1", "Before 2", "After"]


class Address:
    """One TCP address in front of Redis, as a managed Redis's endpoint is: each
    new connection goes to the node ``target`` names now; open ones stay put."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.server: asyncio.Server | None = None
        self.port = 0
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> Address:
        self.server = await asyncio.start_server(self._join, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def _join(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.close()
            return
        self.writers += [writer, up_writer]
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for writer in self.writers:
            writer.close()


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await src.read(65536):
            dst.write(data)
            await dst.drain()
    dst.close()


def in_sync(replica: RedisServer) -> bool:
    with replica.client() as r:
        return bool(r.info("replication").get("master_link_status") == "up")


async def test_a_failover_behind_one_address_is_followed_once_the_old_primary_refuses(
    own_redis: RedisServer, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """The primary is demoted and its replica promoted behind the same address: the
    connections wire holds still reach the old node, now read-only. Each write
    refused READONLY is a 503, and then wire must reconnect (reaching the new
    primary): the editor's retry, with its key, is stored once, on the new primary."""
    # Full syncs at once, not after Redis's 5 s wait for more replicas.
    quick = ("--repl-diskless-sync-delay", "0")
    with own_redis.client() as r:
        r.config_set("repl-diskless-sync-delay", 0)
    replica = RedisServer(
        tmp_path / "replica", extra=("--replicaof", "127.0.0.1", str(own_redis.port), *quick)
    ).start()
    address = await Address(own_redis.port).start()
    try:
        await wait_for(lambda: in_sync(replica), "the replica to sync")
        async with server_factory(address.url) as make:
            wire = await make(**SETTINGS)
            # Several writes at once: the pool holds several connections to the primary.
            warm = await asyncio.gather(*(post(http, wire.base, item(f"W{n}")) for n in range(8)))
            assert {s for s, _ in warm} == {201}, warm
            # The failover: the replica promoted, the old primary made its replica,
            # new connections to the address reach the new primary.
            with replica.client() as r:
                r.execute_command("REPLICAOF", "NO", "ONE")
            with own_redis.client() as r:
                r.execute_command("REPLICAOF", "127.0.0.1", str(replica.port))
            address.target = replica.port
            await wait_for(lambda: in_sync(own_redis), "the old primary to follow the new one")
            key = {"Idempotency-Key": "after-failover"}
            answers: list[int] = []

            async def attempt() -> tuple[int, Any]:
                answer = await post(http, wire.base, item("After"), headers=key)
                answers.append(answer[0])
                return answer

            await eventually(
                attempt, lambda a: a[0] in (200, 201), "a write to reach the new primary", 10
            )
            assert set(answers) <= {503, 200, 201} and answers.count(201) == 1, answers
            with replica.client() as r:
                titles = [f[b"j"] for _, f in r.xrange(keys.STREAM)]
            assert sum(b'"title":"After"' in t for t in titles) == 1
    finally:
        await address.stop()
        replica.stop()
