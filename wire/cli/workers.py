"""Several processes on one port: ``wire run|gateway|publisher --workers N``.

Each worker is an ordinary single-process server with its own stream reader;
the kernel spreads connections over them with SO_REUSEPORT. They share
nothing but Redis, which is what lets a client resume on any gateway and an
embargo be released once by whichever publisher is first (one Lua script
takes due items off the schedule and publishes them, atomically). Every
setting, flags included, reaches the workers through the environment
(``Settings.to_env``), so none is silently dropped.

``wire run --workers N`` serves from the main process, which owns the Redis
it started, plus N-1 worker processes that are whole ``wire run`` apps too
(publisher and gateway): a ``POST /v1/items`` may land on any of them, and
every one can take it. The main process supervises them: a worker that dies
after running a while is restarted, one that dies within
``worker_restart_after`` seconds of its start stops everything (exit 1),
since a crash at start would only repeat. SIGINT/SIGTERM stop the workers,
then the main process, then Redis. A worker also dies with its parent
(``PR_SET_PDEATHSIG``), so even a ``kill -9`` of ``wire run`` leaves none.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import time

from aiohttp import web

from wire.runtime.settings import Settings

log = logging.getLogger("wire")
#: Seconds a stopping worker gets before SIGKILL (its graceful shutdown takes up to 5).
STOP_GRACE = 10.0
ROLE = "WIRE_WORKER_ROLE"
PARENT = "WIRE_WORKER_PARENT"


def worker_count(raw: str, cpus: int | None = None) -> int:
    """``WIRE_WORKERS``/``--workers`` as a count: ``auto`` or 0 is :func:`auto_workers`."""
    text = raw.strip().lower()
    if text in ("auto", "0"):
        return auto_workers(os.cpu_count() if cpus is None else cpus)
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 0:
        raise SystemExit(f"wire: workers must be a count or 'auto', not {raw!r}")
    return n


def auto_workers(cpus: int | None) -> int:
    """A process per core but one, which Redis and the kernel's network stack need.

    On the 2-core box of docs/performance.md (Workers) a second process helped
    at 1,000 subscribers and in bursts but cost at 10,000, where the fan-out
    and the clients fill both cores: so one there. Past two cores each added
    process has a core of its own.
    """
    return max(1, (cpus or 1) - 1)


def _worker_env(settings: Settings, role: str, slot: int) -> dict[str, str]:
    own = settings.with_(worker_slot=slot).to_env()
    return {**os.environ, **own, ROLE: role, PARENT: str(os.getpid())}


def _worker_argv() -> list[str]:
    return [sys.executable, "-m", "wire.cli.workers"]  # each runs worker_main() below


def run_workers(n: int, settings: Settings, role: str = "gateway") -> int:
    """Start ``n`` workers of ``role``, forward SIGINT/SIGTERM to them, wait for all."""
    if settings.redis_url is None:
        raise SystemExit(f"wire {role} --workers needs --redis or WIRE_REDIS_URL")
    procs = [
        subprocess.Popen(_worker_argv(), env=_worker_env(settings, role, slot))
        for slot in range(n)
    ]

    def forward(signum: int, _frame: object) -> None:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    codes = [p.wait() for p in procs]
    return max(codes, default=0)


class WorkerPool:
    """The extra ``wire run`` processes beside the main one, kept running."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.procs: list[asyncio.subprocess.Process] = []
        self.started: list[float] = []
        #: Why the pool stopped the run (a worker that crashed at start), if it did.
        self.failure: str | None = None

    async def _spawn(self, index: int) -> tuple[asyncio.subprocess.Process, float]:
        """Worker ``index`` (from 0), in slot ``index + 1`` of the group: the
        main process is slot 0; a restarted worker takes its predecessor's."""
        # A session of its own: a terminal's Ctrl-C reaches the main process
        # only, which stops the workers in order.
        env = _worker_env(self.settings, "run", index + 1)
        proc = await asyncio.create_subprocess_exec(
            *_worker_argv(), env=env, start_new_session=True
        )
        return proc, time.monotonic()

    async def start(self, n: int) -> None:
        """Start ``n`` workers."""
        for index in range(n):
            proc, at = await self._spawn(index)
            self.procs.append(proc)
            self.started.append(at)

    async def run(self, stop: asyncio.Event) -> None:
        """Keep the workers up until ``stop``, then stop them all."""
        keepers = [
            asyncio.create_task(self._keep(i, proc, at, stop))
            for i, (proc, at) in enumerate(zip(self.procs, self.started, strict=True))
        ]
        await stop.wait()
        for proc in self.procs:
            if proc.returncode is None:
                proc.terminate()
        _, late = await asyncio.wait(keepers, timeout=STOP_GRACE)
        for proc in self.procs:
            if proc.returncode is None:
                log.warning("worker pid %d did not stop in %g s; killing it", proc.pid, STOP_GRACE)
                proc.kill()
        if late:
            await asyncio.wait(late)

    async def _keep(
        self, slot: int, proc: asyncio.subprocess.Process, at: float, stop: asyncio.Event
    ) -> None:
        while True:
            code = await proc.wait()
            if stop.is_set():
                return
            lived = time.monotonic() - at
            if lived < self.settings.worker_restart_after:
                self.failure = (
                    f"worker pid {proc.pid} exited with {code} {lived:.1f} s after it started; "
                    "stopping (see its log above)"
                )
                log.error("%s", self.failure)
                stop.set()
                return
            log.warning("worker pid %d exited with %s; starting another", proc.pid, code)
            proc, at = await self._spawn(slot)
            self.procs[slot] = proc
            if stop.is_set():  # stopped while it was starting: the sweep missed it
                proc.terminate()


async def serve_with_workers(app: web.Application, settings: Settings, extra: int) -> int:
    """Serve ``app`` here and in ``extra`` worker processes on one port; the exit code."""
    from wire.web.app import serve

    stop = asyncio.Event()
    pool = WorkerPool(settings)
    try:
        await pool.start(extra)
    except BaseException:
        for proc in pool.procs:
            proc.kill()
        raise
    supervisor = asyncio.create_task(pool.run(stop))
    try:
        await serve(app, settings, reuse_port=True, stop=stop)
    finally:
        stop.set()
        await supervisor
    if pool.failure is not None:
        print(f"wire: {pool.failure}", file=sys.stderr, flush=True)
        return 1
    return 0


def _die_with_parent() -> None:
    """SIGTERM this process when the process that started it dies (Linux)."""
    parent = os.environ.get(PARENT)
    if parent is None or not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != int(parent):  # it died before the prctl
        raise SystemExit(0)


def worker_main() -> None:
    """One worker on a shared (SO_REUSEPORT) port: gateway, publisher, or both (``run``)."""
    from wire.runtime import loop
    from wire.runtime.logs import setup_logging
    from wire.web.app import create_app, serve

    _die_with_parent()
    settings = Settings.from_env()
    setup_logging(settings.log_level)
    role = os.environ.get(ROLE, "gateway")
    app = create_app(settings, publisher=role != "gateway", gateway=role != "publisher")
    loop.run(
        serve(app, settings, reuse_port=True),
        settings.event_loop,
        gc_threshold=settings.gc_threshold,
    )


if __name__ == "__main__":
    worker_main()
