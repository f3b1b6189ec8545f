"""The processes a bench run starts: redis-server, gateways, publisher, clients."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from wire.runtime.settings import Settings
from wire.storage.embedded import find_server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` and all its descendants (``--workers`` children)."""
    total = 0
    for p in [pid, *_descendants(pid)]:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time used so far by ``pids`` and their descendants."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in [q for pid in pids for q in (pid, *_descendants(pid))]:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rpartition(")")[2].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            pass
    return total / tick


def _descendants(pid: int) -> list[int]:
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            children = Path(f"/proc/{pid}/task/{tid}/children").read_text().split()
        except OSError:
            continue
        for child in children:
            out.append(int(child))
            out.extend(_descendants(int(child)))
    return out


class Child:
    """A child process that is stopped (SIGTERM, then SIGKILL) on exit."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.log = log
        self._log = log.open("wb")
        self.proc = subprocess.Popen(
            argv, env={**os.environ, **env}, stdout=self._log, stderr=subprocess.STDOUT
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def check(self) -> None:
        if self.proc.poll() is not None:
            tail = self.log.read_bytes()[-2000:].decode(errors="replace")
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{tail}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def start_redis(workdir: Path) -> tuple[Child, str]:
    # The server `wire run` would start (WIRE_REDIS_SERVER picks another).
    binary = find_server(Settings.from_env().redis_server).path
    port = free_port()
    home = workdir / "redis"
    home.mkdir(parents=True, exist_ok=True)
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(home)]
    argv += ["--save", "", "--appendonly", "yes", "--appendfsync", "everysec"]
    child = Child("redis-server", argv, {}, workdir / "redis.log")
    deadline = time.monotonic() + 20
    while True:
        child.check()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                if s.recv(100).startswith(b"+PONG"):
                    return child, f"redis://127.0.0.1:{port}/0"
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("redis-server did not start")
        time.sleep(0.02)


def start_wire(name: str, args: list[str], port: int, env: dict[str, str], workdir: Path) -> Child:
    """``python -m wire <args>`` on ``port``.

    Warnings only, unless WIRE_LOG_LEVEL says otherwise: a log line per
    request costs the publisher 10-20 % of its throughput.
    """
    level = os.environ.get("WIRE_LOG_LEVEL", "WARNING")
    base = {"WIRE_PORT": str(port), "WIRE_HOST": "127.0.0.1", "WIRE_LOG_LEVEL": level}
    argv = [sys.executable, "-m", "wire", *args]
    return Child(name, argv, {**base, **env}, workdir / f"{name}.log")


def start_baseline(
    redis_url: str, port: int, fault: str, workdir: Path, module: str = "baseline"
) -> Child:
    """The naive baseline (``module="baseline"``) or the fast path (``"fastpath"``)."""
    argv = [sys.executable, "-m", f"wire.bench.{module}", "--redis", redis_url, "--port", str(port)]
    if fault:
        argv += ["--fault", fault]
    return Child(module, argv, {}, workdir / f"{module}.log")


async def wait_ready(base: str, child: Child | None, within: float = 30.0) -> None:
    """Poll ``GET /readyz`` until it answers 200."""
    host, _, port = base.removeprefix("http://").partition(":")
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if child is not None:
            child.check()
        try:
            r, w = await asyncio.open_connection(host, int(port))
            w.write(f"GET /readyz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            status = await r.read(12)
            w.close()
            if status[9:12] == b"200":
                return
        except OSError:
            pass
        await asyncio.sleep(0.05)
    raise RuntimeError(f"{base} did not become ready in {within:.0f} s")


class Clients:
    """The subscriber client processes (``wire.bench.client``), driven by JSON lines."""

    def __init__(self, n: int, on_progress: Callable[[int, int], None]) -> None:
        self.n = n
        self.on_progress = on_progress
        self.procs: list[asyncio.subprocess.Process] = []
        self.pending: dict[int, asyncio.Future[Any]] = {}
        self.progress: list[tuple[int, int]] = [(0, 0)] * n
        self.ids = itertools.count()
        self.readers: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        for i in range(self.n):
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "wire.bench.client",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                limit=1 << 26,
            )
            self.procs.append(proc)
            self.readers.append(asyncio.create_task(self._read(i, proc)))

    async def _read(self, i: int, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            msg = orjson.loads(line)
            if msg.get("ev") == "progress":
                self.progress[i] = (msg["subscribed"], msg["delivered"])
                self.on_progress(sum(p[0] for p in self.progress), sum(p[1] for p in self.progress))
                continue
            fut = self.pending.pop(msg["id"], None)
            if fut is not None and not fut.done():
                if "error" in msg:
                    fut.set_exception(RuntimeError(f"bench client: {msg['error']}"))
                else:
                    fut.set_result(msg["result"])
        for fut in self.pending.values():
            if not fut.done():
                fut.set_exception(RuntimeError("bench client process exited"))

    async def call(self, i: int, op: str, **args: Any) -> Any:
        rid = next(self.ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.pending[rid] = fut
        stdin = self.procs[i].stdin
        assert stdin is not None
        stdin.write(orjson.dumps({"id": rid, "op": op, "args": args}) + b"\n")
        await stdin.drain()
        return await fut

    async def all(self, op: str, per: Callable[[int], dict[str, Any]] | None = None) -> list[Any]:
        """``op`` on every client process at once (``per(i)`` gives its arguments)."""
        return list(
            await asyncio.gather(
                *(self.call(i, op, **(per(i) if per else {})) for i in range(self.n))
            )
        )

    async def stop(self) -> None:
        for proc in self.procs:
            if proc.stdin is not None:
                proc.stdin.close()
        for proc in self.procs:
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        for task in self.readers:
            task.cancel()
