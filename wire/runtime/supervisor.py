"""Supervision of a process's background tasks (releaser, stream reader, keep-alives).

A background task that ends with an exception used to end for good, silently:
delivery or embargo releases stopped until a restart while ``/readyz`` still
said ready. Each one now runs under a :class:`Supervisor`, which logs the
failure, restarts the task after a short backoff (doubling while it keeps
failing) and reports it as down meanwhile, so ``/readyz`` answers 503.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

log = logging.getLogger("wire.runtime.supervisor")

#: First wait before a restart; doubled after each failure, up to MAX_BACKOFF.
BACKOFF = 0.5
MAX_BACKOFF = 30.0


class Supervisor:
    """Runs named background tasks forever, restarting any that stops."""

    def __init__(self, backoff: float = BACKOFF, max_backoff: float = MAX_BACKOFF) -> None:
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.tasks: dict[str, asyncio.Task[None]] = {}
        #: Names of tasks that stopped and are waiting for their restart.
        self.down: set[str] = set()
        #: How many times each task has stopped (failed or returned).
        self.failures: dict[str, int] = {}

    def start(
        self,
        name: str,
        factory: Callable[[], Awaitable[None]],
        *,
        backoff: float | None = None,
    ) -> asyncio.Task[None]:
        """Run ``factory()`` as task ``name``, again after each time it stops."""
        self.failures.setdefault(name, 0)
        task = asyncio.create_task(self._run(name, factory, backoff), name=f"wire-{name}")
        self.tasks[name] = task
        return task

    def status(self) -> dict[str, bool]:
        """For ``/readyz``: each task's name and whether it is running."""
        return {name: name not in self.down for name in self.tasks}

    async def stop(self, *names: str) -> None:
        """Cancel the named tasks (all when none named) and wait for them to end."""
        chosen = [self.tasks.pop(n) for n in (names or list(self.tasks)) if n in self.tasks]
        for task in chosen:
            task.cancel()
        await asyncio.gather(*chosen, return_exceptions=True)

    async def _run(
        self, name: str, factory: Callable[[], Awaitable[None]], backoff: float | None
    ) -> None:
        first = self.backoff if backoff is None else backoff
        delay = first
        while True:
            started = time.monotonic()
            current = asyncio.current_task()
            try:
                await factory()
                error = "returned"
            except (asyncio.CancelledError, Exception) as exc:
                if current is not None and current.cancelling():
                    # Stopped; or a cancel turned into another error inside a library.
                    raise asyncio.CancelledError from exc
                # A CancelledError nobody sent this task (a cancelled future it
                # awaited) is a failure too: re-raised, it ended supervision
                # for good while status() still said running.
                log.exception("background task %s failed", name)
                error = f"failed: {exc!r}"
            # A task that ran well for a while starts over from the short wait.
            if time.monotonic() - started > self.max_backoff:
                delay = first
            log.error("background task %s %s; restarting it in %.1fs", name, error, delay)
            self.failures[name] += 1
            self.down.add(name)
            try:
                await asyncio.sleep(delay)
            finally:
                self.down.discard(name)
            delay = min(delay * 2, self.max_backoff)


SUPERVISOR = web.AppKey("supervisor", Supervisor)
