"""Wake long-polling readers when the stream reader dispatches a batch.

A waiting ``GET /v1/items?after=..&wait=..`` must cost no Redis read of its
own while nothing arrives. The gateway's one stream reader already reads every
new entry; it hands each dispatched batch to :meth:`Arrivals.publish`, which
resolves one shared future: O(1) per batch, whatever the number of waiters.
Each waiter then filters the batch itself and goes back to Redis only when
something in it matches.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Generic, TypeVar

T = TypeVar("T")


class Arrivals(Generic[T]):
    """The batches a process's stream reader dispatches, for those who wait on them."""

    def __init__(self, max_waiters: int) -> None:
        self.max_waiters = max_waiters
        #: Requests waiting right now (each holds a slot; see :meth:`slot`).
        self.waiting = 0
        #: Batches published so far: a waiter that sees this move by more than
        #: one since it took its future knows it missed a batch.
        self.published = 0
        self._next: asyncio.Future[Sequence[T]] | None = None
        #: The last non-empty batch published (empty before the first).
        self.last: Sequence[T] = ()

    def next_batch(self) -> asyncio.Future[Sequence[T]]:
        """The future the next dispatched batch resolves; shared by every waiter.

        Take it *before* reading history, so a batch that lands between the
        read and the wait still wakes the waiter.
        """
        if self._next is None or self._next.done():
            self._next = asyncio.get_running_loop().create_future()
        return self._next

    def publish(self, batch: Sequence[T]) -> None:
        """Hand ``batch`` to everyone waiting (the reader calls this per batch)."""
        future, self._next = self._next, None
        self.published += 1
        if batch:
            self.last = batch
        if future is not None and not future.done():
            future.set_result(batch)

    def take_slot(self) -> bool:
        """Claim a waiter's slot: False when ``max_waiters`` already wait."""
        if self.waiting >= self.max_waiters:
            return False
        self.waiting += 1
        return True

    def free_slot(self) -> None:
        """Give a slot back (always, in a ``finally``: a client gone frees it)."""
        self.waiting -= 1
