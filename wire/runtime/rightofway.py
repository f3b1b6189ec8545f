"""The fan-out's right of way over background work in the same process.

In ``wire run`` one event loop publishes, fans out to every subscriber and
delivers webhooks. One webhook delivery (a lease check, an HTTP POST, a
cursor write) costs about 0.5 ms of CPU, what some 1,000 deliveries to
WebSocket subscribers cost in a burst, so a deliverer working through a
burst alongside the fan-out slowed it by 5-20 % (docs/performance.md).
With this, the stream reader marks the fan-out busy from the moment it
takes entries until it waits on the stream again, and a deliverer waits for
that before each delivery, at most :data:`MOST` seconds at a time: a burst
goes out first, the webhooks follow right after, and a process whose
fan-out never rests still delivers at least one item per :data:`MOST` to
each webhook. Without a gateway in the process (``wire
deliver``, a publisher alone) nothing marks it busy and nobody waits.
"""

from __future__ import annotations

import asyncio
import contextlib

#: The longest background work waits for the fan-out at a time (seconds).
MOST = 0.05


class RightOfWay:
    """Busy while the fan-out writes a batch; background work yields to it."""

    def __init__(self, most: float = MOST) -> None:
        self.most = most
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def busy(self) -> bool:
        return not self._idle.is_set()

    def take(self) -> None:
        """The fan-out has entries to write."""
        self._idle.clear()

    def give(self) -> None:
        """The fan-out waits for the stream: background work may go."""
        self._idle.set()

    async def wait(self) -> bool:
        """Wait until the fan-out rests, at most :attr:`most`; whether it waited at all."""
        if self._idle.is_set():
            return False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.most):
                await self._idle.wait()
        return True
