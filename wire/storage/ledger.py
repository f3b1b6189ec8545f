"""The delivery ledger in Redis: the per-process flusher and the reads.

Records reach this process's :class:`~wire.core.ledger.Tally` from the hub
(WebSocket, SSE), the webhook deliverer and the read routes. :class:`Ledger`
flushes them every ``WIRE_LEDGER_FLUSH`` seconds (and early when the tally
passes ``WIRE_LEDGER_PENDING`` tuples): it aggregates them into one record per
(story, partner, channel, version) and writes the whole flush with ONE script
call, a single round trip. Each story's records are one hash,
:func:`wire.storage.keys.ledger` (its key built from the guid's digest, its
fields the JSON of ``[partner, channel, version]``), kept as long as the
story's own keys.

While Redis is down the aggregated records wait for the next flush, at most
``WIRE_LEDGER_PENDING`` of them: past that the oldest are dropped and
counted (``wire_ledger_dropped_records``), so memory never grows without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions

from wire.core import ledger
from wire.core.ledger import Record, RecordKey, Span, Tally
from wire.runtime.settings import Settings
from wire.storage import keys, scripts
from wire.storage.store import retention

log = logging.getLogger("wire.storage.ledger")

#: Records per script call: a flush bigger than this takes a few calls.
CALL_RECORDS = 5_000
#: What a failed flush can raise: its records are kept for the next one.
FLUSH_ERRORS = (redis.exceptions.RedisError, OSError, asyncio.TimeoutError)


@dataclass(frozen=True, slots=True)
class StoryLedger:
    """What Redis holds about one story's deliveries."""

    exists: bool
    withdrawn: bool
    records: list[Record]
    anonymous: int


class Ledger:
    """One process's ledger: takes the tally, aggregates it, writes it to Redis."""

    def __init__(self, redis: aioredis.Redis, settings: Settings, tally: Tally) -> None:
        self.redis = redis
        self.settings = settings
        self.tally = tally
        tally.cap = max(1, settings.ledger_pending)
        tally.on_full = self.absorb
        #: Aggregated records not yet written (oldest first) and anonymous counts.
        self.unsent: dict[RecordKey, Span] = {}
        self.unsent_anonymous: dict[str, int] = {}
        self.dropped = 0
        self.written = 0
        self.flushes = 0
        self._due = asyncio.Event()
        self._lock = asyncio.Lock()
        self._script = redis.register_script(scripts.LEDGER)

    def absorb(self) -> None:
        """Aggregate the tally now (it passed its cap): memory stays bounded
        even while a flush waits for Redis; the flusher is woken."""
        pending, anonymous = self.tally.take()
        ledger.aggregate(pending, self.unsent)
        ledger.add_counts(self.unsent_anonymous, anonymous)
        self._bound()
        self._due.set()

    def _bound(self) -> None:
        dropped = ledger.trim(self.unsent, max(1, self.settings.ledger_pending))
        if dropped:
            self.dropped += dropped
            log.warning("delivery ledger: %d records dropped (Redis unreachable?)", dropped)
        # One count per story: bounded like the records.
        extra = len(self.unsent_anonymous) - max(1, self.settings.ledger_pending)
        for guid in list(self.unsent_anonymous)[: max(0, extra)]:
            del self.unsent_anonymous[guid]

    async def run(self) -> None:
        """Flush every ``ledger_flush`` seconds, or early when the tally fills (supervised)."""
        interval = max(0.01, self.settings.ledger_flush)
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._due.wait(), interval)
            self._due.clear()
            try:
                await self.flush()
            except FLUSH_ERRORS as err:
                log.warning("delivery ledger: flush failed, kept for the next one: %r", err)

    async def flush(self) -> None:
        """Write everything recorded so far in this process (raises when Redis fails;
        what was not written then waits for the next flush)."""
        async with self._lock:
            self.absorb()
            self._due.clear()
            records, self.unsent = self.unsent, {}
            anonymous, self.unsent_anonymous = self.unsent_anonymous, {}
            if not records and not anonymous:
                return
            try:
                await self._write(records, anonymous)
            except BaseException:
                # Put back, older first; the cap still holds.
                self.unsent = ledger.merge(records, self.unsent)
                ledger.add_counts(anonymous, self.unsent_anonymous)
                self.unsent_anonymous = anonymous
                self._bound()
                raise
            self.written += len(records)
            self.flushes += 1

    async def _write(self, records: dict[RecordKey, Span], anonymous: dict[str, int]) -> None:
        ttl = retention(self.settings).story_ttl
        items = list(records.items())
        counts = list(anonymous.items())
        for start in range(0, max(len(items), 1), CALL_RECORDS):
            chunk = items[start : start + CALL_RECORDS]
            call = _call(chunk, counts if start == 0 else [], ttl)
            if not call.stories:
                continue
            key_list, args = call.lists()
            result: Any = await self._script(keys=key_list, args=args)
            if result[0] == b"conflict":
                # Retrying cannot help until an operator repairs the key.
                self.dropped += len(chunk)
                log.error("delivery ledger: redis key %r holds a type wire did not write; "
                          "%d records dropped", result[1].decode(), len(chunk))

    async def read(self, guid: str) -> StoryLedger:
        """The story's records (and whether it exists and is withdrawn): one round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.exists(keys.story(guid))
            pipe.hexists(keys.story(guid), "withdrawn")
            pipe.hgetall(keys.ledger(guid))
            exists, withdrawn, fields = await pipe.execute()
        records, count = ledger.parse_records(fields)
        return StoryLedger(bool(exists) or bool(records), bool(withdrawn), records, count)


def _call(
    records: list[tuple[RecordKey, Span]], anonymous: list[tuple[str, int]], ttl: int
) -> scripts.LedgerArgs:
    """The script call of some records and counts: each story's key once."""
    index: dict[str, int] = {}

    def key_no(guid: str) -> int:
        n = index.get(guid)
        if n is None:
            n = index[guid] = len(index) + 1
        return n

    lines = [
        b"r %d %d %d %s" % (key_no(guid), first, last, ledger.encode_field(partner, channel, mark))
        for (guid, partner, channel, mark), (first, last) in records
    ]
    lines += [b"a %d %d" % (key_no(guid), n) for guid, n in anonymous if n > 0]
    return scripts.LedgerArgs(
        stories=tuple(keys.ledger(g) for g in index), story_ttl=ttl, lines=b"\n".join(lines)
    )
