"""Keep-alives for every connection of a process, from one task.

WebSocket connections get a ping each round, and one that has not answered
the previous round's ping is closed: its peer is gone or frozen. SSE
connections get a comment. (aiohttp's own heartbeat costs a timer and
callbacks per connection, about 600 bytes each.) A round goes a step of
connections at a time, spread over part of the interval, so live items never
wait behind thousands of pings. The hub does the writing and closing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Generic, Protocol, TypeVar

from wire.core import frames

C = TypeVar("C")


class Pings(Generic[C]):
    """Which connections were pinged and have not answered."""

    __slots__ = ("unanswered",)

    def __init__(self) -> None:
        self.unanswered: set[C] = set()

    def overdue(self) -> list[C]:
        """Those that never answered the last round's ping: to be closed now."""
        return list(self.unanswered)

    def pinged(self, conn: C) -> None:
        self.unanswered.add(conn)

    def answered(self, conn: C) -> None:
        """A pong came (or the connection is gone): it owes nothing."""
        self.unanswered.discard(conn)


async def sweep(
    conns: Sequence[C], visit: Callable[[C], None], per_step: int, spread: float
) -> None:
    """``visit`` every connection, ``per_step`` at a time, spread over ``spread`` seconds."""
    pause = spread * per_step / len(conns) if conns else 0
    for start in range(0, len(conns), per_step):
        if start:
            await asyncio.sleep(pause)
        for conn in conns[start : start + per_step]:
            visit(conn)


class Rounds(Protocol):
    """What runs a keep-alive round (the hub)."""

    async def keepalive(
        self, sse_comment: bytes, per_step: int = ..., spread: float = ...
    ) -> None: ...


async def run(hub: Rounds, interval: float) -> None:
    """A round every half interval, forever (a supervised task)."""
    chunk = frames.http_chunk(frames.sse_comment("keep-alive"))
    while True:
        await asyncio.sleep(interval / 2)
        # Pinged over half the interval, so each has at least that long to answer.
        await hub.keepalive(chunk, spread=interval / 2)
