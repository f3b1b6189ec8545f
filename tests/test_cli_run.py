"""The ``wire`` command as a user runs it: real child processes, real redis-server.

``wire run`` with no WIRE_REDIS_URL starts its own redis-server under the
data directory, prints a generated editor token with a curl example, and
keeps every item across a stop and a start (and across a kill -9). ``wire
publish`` talks to it over HTTP.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import shutil
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.support import ROOT, free_port, get_json, item, post

Http = aiohttp.ClientSession
NO_RETRY = Retry(NoBackoff(), 0)  # redis-py's default backs off for seconds on a dead socket


def clean_env(**extra: str) -> dict[str, str]:
    """The test runner's environment without any WIRE_* setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WIRE_")}
    env.update(extra)
    return env


@dataclass
class Run:
    """One ``python -m wire run`` child; stdout is read, stderr goes to a file."""

    data_dir: Path
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    command: str = "run"
    proc: asyncio.subprocess.Process | None = None
    banner: str = ""

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, *args: str) -> Run:
        env = clean_env(WIRE_DATA_DIR=str(self.data_dir), WIRE_PORT=str(self.port), **self.env)
        with self.log.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "wire",
                self.command,
                *args,
                cwd=ROOT,
                env=env,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
            )
        return self

    async def read_banner(self) -> str:
        """The lines printed at start, up to the one after the curl example."""
        assert self.proc is not None and self.proc.stdout is not None
        lines: list[str] = []
        async with asyncio.timeout(30):
            while not lines or "Watch the live feed" not in lines[-1]:
                line = await self.proc.stdout.readline()
                assert line, f"wire run closed stdout: {lines} {self.log.read_text()[-2000:]}"
                lines.append(line.decode())
        self.banner = "".join(lines)
        return self.banner

    @property
    def token(self) -> str:
        match = re.search(r"editor token is:\s+(\S+)", self.banner)
        assert match, self.banner
        return match.group(1)

    async def ready(self, http: Http) -> None:
        """Until /readyz answers 200 (or the process exits, which fails the test)."""
        deadline = time.monotonic() + 30
        while True:
            assert self.proc is not None
            assert self.proc.returncode is None, self.log.read_text()[-2000:]
            try:
                status, _ = await get_json(http, self.base + "/readyz")
                if status == 200:
                    return
            except aiohttp.ClientError:
                pass
            assert time.monotonic() < deadline, "wire run did not become ready"
            await asyncio.sleep(0.05)

    async def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
        async with asyncio.timeout(30):
            return await self.proc.wait()

    @property
    def redis_home(self) -> Path:
        return (self.data_dir / "redis").resolve()

    def redis_client(self) -> redis.Redis:
        """A client on the embedded Redis, through the socket the run recorded."""
        sock = (self.redis_home / "socket").read_text().strip()
        return redis.Redis(unix_socket_path=sock, socket_connect_timeout=2, retry=NO_RETRY)


@pytest.fixture
async def runs(tmp_path: Path) -> AsyncIterator[Callable[..., Run]]:
    """Make Run objects; every child still running at the end is killed."""
    made: list[Run] = []

    def make(data_dir: Path | None = None, **env: str) -> Run:
        run = Run(data_dir or tmp_path / "data", tmp_path / f"run{len(made)}.log", env)
        made.append(run)
        return run

    yield make
    for run in made:
        if run.proc is not None and run.proc.returncode is None:
            run.proc.kill()
            await run.proc.wait()
        # A run killed with -9 leaves its redis-server behind: stop it too.
        record = run.redis_home / "socket"
        if record.exists():
            try:
                sock = record.read_text().strip()
                with redis.Redis(unix_socket_path=sock, retry=NO_RETRY) as client:
                    client.shutdown(nosave=True)
            except redis.RedisError:
                pass


async def wire_cli(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    """Run ``python -m wire <args>``; return exit code, stdout and stderr."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "wire",
        *args,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(30):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def process_gone(pid: int) -> bool:
    """True when ``pid`` has exited (a zombie waiting for its reaper counts as exited)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "\nState:\tZ" in status.read_text()


async def wait_gone(pid: int) -> None:
    """Until ``pid`` has exited; fails after 20 s."""
    deadline = time.monotonic() + 20
    while not process_gone(pid):
        assert time.monotonic() < deadline, f"process {pid} is still running"
        await asyncio.sleep(0.05)


# --- wire run -----------------------------------------------------------------------


async def test_run_starts_embedded_redis_and_keeps_items_across_restarts(
    runs: Callable[..., Run], http: Http, tmp_path: Path
) -> None:
    # A long data dir path: the Unix socket must still fit (sun_path is ~104 bytes).
    data_dir = tmp_path / ("newsroom-" + "x" * 80) / ".wire"
    first = await runs(data_dir).start()
    banner = await first.read_banner()
    await first.ready(http)
    token = first.token
    assert len(token) >= 20
    assert f"curl -s {first.base}/v1/items -H 'Authorization: Bearer {token}'" in banner
    # The embedded Redis keeps its append-only file under the data directory.
    assert (data_dir / "redis" / "appendonlydir").is_dir()
    with first.redis_client() as client:
        assert client.config_get("appendfsync") == {"appendfsync": "everysec"}

    published = []
    for i in range(3):
        status, body = await post(http, first.base, item(f"Story {i}"), token=token)
        assert status == 201, body
        published.append(body["item"])
    with first.redis_client() as client:
        redis_pid = int(client.info("server")["process_id"])

    assert await first.stop() == 0
    await wait_gone(redis_pid)  # wire run stops the redis-server it started

    second = await runs(data_dir).start()
    await second.read_banner()
    await second.ready(http)
    assert second.token != token  # a fresh token per run
    status, body = await get_json(http, second.base + "/v1/items?after=0")
    assert (status, body) == (200, {"items": published})
    status, _ = await post(http, second.base, item("After restart"), token=second.token)
    assert status == 201
    status, _ = await post(http, second.base, item("Old token"), token=token)
    assert status == 401
    assert await second.stop() == 0


async def test_printed_curl_example_publishes(runs: Callable[..., Run], http: Http) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    run = await runs().start()
    banner = await run.read_banner()
    await run.ready(http)
    start = banner.index("curl -s")
    command = banner[start : banner.index("\n\n", start)].replace("\\\n", " ")
    proc = await asyncio.create_subprocess_exec(
        *shlex.split(command), stdout=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(30):
        out, _ = await proc.communicate()
    assert proc.returncode == 0
    answer = orjson.loads(out)
    assert answer["item"]["title"] == "Hello, wire"
    assert answer["item"]["tags"] == ["world"]


async def test_killed_run_loses_no_item_and_leaves_no_redis(
    runs: Callable[..., Run], http: Http
) -> None:
    first = await runs(WIRE_EDITOR_TOKENS="desk").start()
    await first.ready(http)
    status, body = await post(http, first.base, item("Before the crash"), token="desk")
    assert status == 201
    with first.redis_client() as client:
        orphan = int(client.info("server")["process_id"])

    assert await first.stop(signal.SIGKILL) == -signal.SIGKILL
    # The redis-server child outlives a kill -9 of its parent ...
    assert not process_gone(orphan)

    second = await runs(WIRE_EDITOR_TOKENS="desk").start()
    await second.ready(http)
    # ... until the next run on the same data directory shuts it down cleanly.
    await wait_gone(orphan)
    with second.redis_client() as client:
        assert int(client.info("server")["process_id"]) != orphan
    status, answer = await get_json(http, second.base + "/v1/items")
    assert (status, answer) == (200, {"items": [body["item"]]})
    assert await second.stop() == 0


async def test_second_run_on_the_same_data_dir_refuses(
    runs: Callable[..., Run], http: Http
) -> None:
    first = await runs(WIRE_EDITOR_TOKENS="desk").start()
    await first.ready(http)
    second = await runs(WIRE_EDITOR_TOKENS="desk").start()
    assert second.proc is not None
    async with asyncio.timeout(30):
        assert await second.proc.wait() == 1
    assert "in use by another wire run" in second.log.read_text()
    # The first run is unharmed.
    status, _ = await post(http, first.base, item(), token="desk")
    assert status == 201


async def test_run_without_redis_server_exits_with_a_one_line_hint(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    # Only redis-server: the bundled server is not asked for (see test_bundled_redis.py).
    env = clean_env(
        PATH=str(empty), WIRE_DATA_DIR=str(tmp_path / "data"), WIRE_REDIS_SERVER="redis-server"
    )
    code, out, err = await wire_cli("run", "--port", str(free_port()), env=env)
    assert code == 1
    assert err.count("\n") == 1, err
    assert err.startswith("wire: redis-server not found")
    for hint in ("apt install redis-server", "brew install redis", "WIRE_REDIS_URL"):
        assert hint in err
    assert "token" not in out  # no token is announced for a run that cannot start


async def test_run_uses_wire_redis_url_when_set(
    runs: Callable[..., Run], http: Http, redis_url: str, tmp_path: Path
) -> None:
    run = runs(tmp_path / "unused", WIRE_REDIS_URL=redis_url, WIRE_EDITOR_TOKENS="desk")
    await run.start()
    await run.ready(http)
    status, body = await post(http, run.base, item("Into the given Redis"), token="desk")
    assert status == 201
    with redis.Redis.from_url(redis_url) as client:
        assert [eid.decode() for eid, _ in client.xrange("wire:items")] == [body["item"]["id"]]
    assert not (tmp_path / "unused" / "redis").exists()  # no embedded server
    assert await run.stop() == 0
    assert run.proc is not None and run.proc.stdout is not None
    assert b"editor token" not in await run.proc.stdout.read()  # tokens were configured


async def test_run_flags_override_the_environment(
    runs: Callable[..., Run], http: Http, redis_url: str
) -> None:
    run = runs(WIRE_REDIS_URL="redis://127.0.0.1:1/0", WIRE_EDITOR_TOKENS="desk")
    flag_port = free_port()
    await run.start("--port", str(flag_port), "--redis", redis_url)
    run.port = flag_port
    await run.ready(http)
    status, _ = await post(http, run.base, item(), token="desk")
    assert status == 201


async def test_publisher_command_serves_the_api_without_the_gateway(
    runs: Callable[..., Run], http: Http, redis_url: str
) -> None:
    run = runs(WIRE_REDIS_URL=redis_url)
    run.command = "publisher"
    await run.start()
    await run.read_banner()  # no tokens configured: one is generated here too
    await run.ready(http)
    status, _ = await post(http, run.base, item(), token=run.token)
    assert status == 201
    status, body = await get_json(http, run.base + "/v1/ws")
    assert (status, body["error"]["code"]) == (404, "not_found")
    assert await run.stop() == 0


# --- wire publish and --help ----------------------------------------------------------


async def test_wire_publish(runs: Callable[..., Run], http: Http) -> None:
    run = runs(WIRE_EDITOR_TOKENS="desk")
    await run.start()
    await run.ready(http)
    env = clean_env(WIRE_TOKEN="desk")
    args = ["publish", "--url", run.base, "--title", "  From the CLI ", "--tag", "World/Europe"]
    code, out, err = await wire_cli(
        *args, "--tag", "tech", "--urgency", "2", "--mark", "Exclusive", env=env
    )
    assert code == 0, err
    published = orjson.loads(out)
    assert published["title"] == "From the CLI"
    assert published["tags"] == ["world/europe", "tech"]
    assert published["urgency"] == 2 and published["mark"] == "Exclusive"
    status, body = await get_json(http, f"{run.base}/v1/items/{published['id']}")
    assert (status, body) == (200, {"item": published})

    code, out, err = await wire_cli(*args, env=clean_env())
    assert code == 2 and out == ""
    assert "WIRE_TOKEN" in err

    code, out, err = await wire_cli(*args, env=clean_env(WIRE_TOKEN="wrong"))
    assert code == 1 and out == ""
    assert "401" in err and "unauthorized" in err

    code, _, err = await wire_cli(*args, "--urgency", "12", env=env)
    assert code == 1
    assert "400" in err and "urgency" in err

    dead = f"http://127.0.0.1:{free_port()}"
    code, _, err = await wire_cli("publish", "--url", dead, "--title", "x", "--tag", "y", env=env)
    assert code == 3
    assert "cannot reach" in err

    status, body = await get_json(http, run.base + "/v1/items")
    assert [i["id"] for i in body["items"]] == [published["id"]]  # failures stored nothing


async def test_wire_help_lists_the_commands() -> None:
    code, out, _ = await wire_cli("--help", env=clean_env())
    assert code == 0
    for command in ("run", "publisher", "gateway", "publish"):
        assert command in out
    code, out, _ = await wire_cli("publish", "--help", env=clean_env())
    assert code == 0
    for flag in ("--title", "--tag", "--subtitle", "--mark", "--urgency"):
        assert flag in out
    code, _, err = await wire_cli("publish", env=clean_env())
    assert code == 2 and "--title" in err
