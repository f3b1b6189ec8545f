"""Many script calls in one Redis round trip, safe against a flushed script cache.

A batch publish runs the publish script once per item. Sent one by one that
is a round trip per item; here they go as one non-transactional pipeline, so
Redis runs them back to back in the order given (each still atomic on its
own) and the batch costs one round trip.

``EVALSHA`` fails with NOSCRIPT when Redis's script cache is empty (a restart,
a failover to a replica that never ran the script, ``SCRIPT FLUSH``).
redis-py's own pipeline answers that with a ``SCRIPT EXISTS`` round trip
before every pipeline; instead each pipeline here starts with ``SCRIPT LOAD``
of the scripts it calls, which costs Redis a hash of a few KB and no extra
round trip. Only a ``SCRIPT FLUSH`` landing inside the pipeline can still
make a call fail with NOSCRIPT: such a call ran nothing, and is sent again
(the failed ones, in their order) in a new pipeline. The single writes'
small pipelines (:mod:`wire.storage.coalescer`) skip the ``SCRIPT LOAD``
until Redis answers NOSCRIPT: their scripts are nearly always there.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from typing import Any

import hiredis
import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, ResponseError

from wire.storage.scripts import ScriptArgs

#: Pipelines sent for one batch before calls still failing with NOSCRIPT are
#: given up (each needs a SCRIPT FLUSH inside the previous pipeline).
ATTEMPTS = 3

#: One call's outcome: the script's reply (or the error Redis answered for
#: this call alone) and how many replicas acknowledged it (0 unless asked).
Outcome = tuple[Any, int]


async def run_scripts(
    redis: aioredis.Redis,
    calls: Sequence[tuple[AsyncScript, ScriptArgs]],
    *,
    replica_acks: int = 0,
    load: bool = True,
) -> list[Outcome]:
    """Run every call, in order, in one pipeline (more only after NOSCRIPT).

    A connection failure raises (some calls may have run: callers make that
    safe with idempotency keys); an error Redis answers for one call is that
    call's outcome. With ``replica_acks``, a ``WAIT`` ends each pipeline, on
    its connection, so the count covers that pipeline's writes. Without
    ``load`` the first pipeline is the calls alone (the scripts are loaded only
    if Redis answers NOSCRIPT): for the small groups of single writes, whose
    scripts Redis nearly always has.
    """
    outcomes: list[Outcome | None] = [None] * len(calls)
    todo = list(range(len(calls)))
    for attempt in range(ATTEMPTS):
        replies, acked = await _send(
            redis, [calls[i] for i in todo], replica_acks, load=load or attempt > 0
        )
        again = []
        for i, reply in zip(todo, replies, strict=True):
            if isinstance(reply, NoScriptError):
                again.append(i)
            else:
                outcomes[i] = (reply, acked)
        todo = again
        if not todo:
            break
    for i in todo:
        outcomes[i] = (NoScriptError("the script cache was flushed repeatedly"), 0)
    return [o for o in outcomes if o is not None]


async def _send(
    redis: aioredis.Redis,
    calls: list[tuple[AsyncScript, ScriptArgs]],
    replica_acks: int,
    *,
    load: bool = True,
) -> tuple[list[Any], int]:
    """One pipeline: SCRIPT LOAD of each script used (unless not ``load``), the
    calls, then WAIT if asked; the calls' replies and the replicas counted.

    The commands are packed by hiredis's C packer and written at once on a
    connection of the client's pool: redis-py's pure-Python packing cost the
    publisher more per item than the script costs Redis.
    """
    used = {id(script): script for script, _ in calls} if load else {}
    commands: list[tuple[Any, ...]] = [("SCRIPT", "LOAD", s.script) for s in used.values()]
    for script, call in calls:
        keys, args = call.lists()
        commands.append(("EVALSHA", script.sha, len(keys), *keys, *args))
    if replica_acks > 0:
        commands.append(("WAIT", replica_acks, 2000))
    replies = await _exchange(redis, b"".join(map(hiredis.pack_command, commands)), len(commands))
    acked = _acked(replies, replica_acks)
    return replies[len(used) : len(used) + len(calls)], acked


def _acked(replies: list[Any], replica_acks: int) -> int:
    """The replicas a pipeline's closing ``WAIT`` counted (0 when none was asked)."""
    last = replies[-1]
    return int(last) if replica_acks > 0 and not isinstance(last, Exception) else 0


async def _exchange(redis: aioredis.Redis, packed: bytes, count: int) -> list[Any]:
    """Write ``packed`` on one pooled connection and read its ``count`` replies.

    An error reply is that command's reply; any other failure (a timeout, a
    cancel) leaves replies unread, so the connection is dropped, not reused.
    Redis must answer them all within the client's socket timeout (5 s; a
    batch of 1,000 takes it some tens of milliseconds).
    """
    pool = redis.connection_pool
    conn = await pool.get_connection()  # type: ignore[no-untyped-call]
    try:
        await conn.send_packed_command(packed)
        replies: list[Any] = []
        # One deadline for all the replies: redis-py's own, per reply, cost
        # more than reading the reply.
        async with asyncio.timeout(conn.socket_timeout):
            for _ in range(count):
                try:
                    replies.append(await conn.read_response(timeout=math.inf))
                except ResponseError as err:
                    replies.append(err)
        return replies
    except BaseException:
        await conn.disconnect()
        raise
    finally:
        await pool.release(conn)
