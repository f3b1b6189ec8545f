"""One call in flight, shared by everyone who asks meanwhile.

A storm of identical reads (thousands of clients resuming at once, each
needing the stream's retention; a burst of ``/metrics`` scrapes) would send
one round trip each. A :class:`Shared` sends one: a call made while another
is in flight waits for that one's answer, which is at most one round trip
old. Each caller is shielded: one that is cancelled does not cancel the
call the others wait on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Shared(Generic[T]):
    """Concurrent calls of ``make`` share the one in flight."""

    def __init__(self, make: Callable[[], Awaitable[T]]) -> None:
        self._make = make
        self._running: asyncio.Future[T] | None = None

    async def __call__(self) -> T:
        if self._running is None or self._running.done():
            self._running = asyncio.ensure_future(self._make())
        return await asyncio.shield(self._running)
