"""Single script calls made at the same moment, sent to Redis as one pipeline.

Every single write (a ``POST /v1/items``, a withdrawal, an embargo, a
release) is one script call. When editors post concurrently, several calls
are made in the same turn of the event loop (their requests arrived in one
read of the sockets); sent one by one, each takes a pooled connection, a
write, a read and a wake-up of its own, here and in Redis, which shares the
machine. The :class:`Coalescer` holds the calls made in one turn and sends
them in one pipeline on one connection (Redis runs each atomically, in
order) at the end of the turn: nothing waits for a call that has not been
made yet, so a lone call goes out at once, as before.

With ``WIRE_REPLICA_ACKS``, the one ``WAIT`` that ends the pipeline counts
the replicas that have every write before it, so it covers each call.
"""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

from wire.storage.pipeline import Outcome, run_scripts
from wire.storage.scripts import ScriptArgs

#: Calls sent in one pipeline at most, as many as a batch publish sends; more
#: made in one turn (thousands of concurrent requests) go in several, one
#: after the other, so Redis runs them in the order they were made.
GROUP = 1000

Call = tuple[AsyncScript, ScriptArgs, "asyncio.Future[Outcome]"]


class Coalescer:
    """Runs script calls, those made in one turn of the loop in one pipeline."""

    def __init__(self, redis: aioredis.Redis, replica_acks: int = 0) -> None:
        self._redis = redis
        self._replica_acks = max(0, replica_acks)
        self._pending: list[Call] = []
        #: Pipelines in flight (a reference keeps each task alive).
        self._sending: set[asyncio.Task[None]] = set()

    async def run(self, script: AsyncScript, call: ScriptArgs) -> Outcome:
        """The script's reply and the replicas that acknowledged it; an error reply raises.

        A connection failure raises for every call of its pipeline; some may
        have run (callers make that safe with idempotency keys).
        """
        loop = asyncio.get_running_loop()
        if not self._pending:
            loop.call_soon(self._flush)
        done: asyncio.Future[Outcome] = loop.create_future()
        self._pending.append((script, call, done))
        reply, acked = await done
        if isinstance(reply, Exception):
            raise reply
        return reply, acked

    def _flush(self) -> None:
        """Send the calls this turn made."""
        pending, self._pending = self._pending, []
        task = asyncio.ensure_future(self._send_all(pending))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send_all(self, pending: list[Call]) -> None:
        """Pipelines of :data:`GROUP`, one after the other; cancelled (the loop
        shutting down), every caller still waiting is cancelled too."""
        try:
            for start in range(0, len(pending), GROUP):
                await self._send(pending[start : start + GROUP])
        except asyncio.CancelledError:
            for *_, done in pending:
                done.cancel()
            raise

    async def _send(self, group: list[Call]) -> None:
        """One pipeline; each call's outcome (or the failure) to its caller."""
        try:
            outcomes = await run_scripts(
                self._redis,
                [(script, call) for script, call, _ in group],
                replica_acks=self._replica_acks,
                load=False,
            )
        except Exception as err:
            for *_, done in group:
                if not done.done():
                    done.set_exception(err)
            return
        for (*_, done), outcome in zip(group, outcomes, strict=True):
            if not done.done():
                done.set_result(outcome)
