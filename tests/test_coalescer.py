"""Single writes made at the same moment reach Redis as one pipeline, over a real Redis.

:class:`wire.storage.coalescer.Coalescer`: what Redis sees (``MONITOR``: the
calls of one turn on one connection, in the order they were made, at most
``GROUP`` to a pipeline) and what each caller gets (its own answer, its own
error, the failure of its pipeline, nothing for a cancelled caller).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

from redis.exceptions import ConnectionError as RedisConnectionError

from tests.support import RedisServer
from wire.core.errors import IdempotencyKeyReused, StoryWithdrawn
from wire.core.items import Submission, parse_submission
from wire.runtime.settings import Settings
from wire.storage.coalescer import GROUP
from wire.storage.store import Store, Written, connect

#: ``MONITOR`` line: ``+<time> [<db> <client address>] "<COMMAND>" ...``.
MONITOR_LINE = re.compile(rb'^\+[0-9.]+ \[\d+ ([^\]]+)\] "([A-Za-z]+)"')


def submission(title: str, guid: str | None = None) -> Submission:
    raw: dict[str, object] = {"title": title, "tags": ["coalesce"]}
    if guid is not None:
        raw["guid"] = guid
    return parse_submission(raw, now=datetime.now(UTC))


@asynccontextmanager
async def opened(url: str) -> AsyncIterator[Store]:
    client = connect(url)
    try:
        yield Store(client, Settings(redis_url=url))
    finally:
        await client.aclose()


class Monitor:
    """The client address of every ``EVALSHA`` Redis runs while it watches."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.evalsha: list[str] = []
        self._reader: asyncio.StreamReader
        self._writer: asyncio.StreamWriter

    async def __aenter__(self) -> Monitor:
        port = int(self.url.rsplit(":", 1)[1].split("/")[0])
        self._reader, self._writer = await asyncio.open_connection("127.0.0.1", port)
        self._writer.write(b"MONITOR\r\n")
        assert await self._reader.readline() == b"+OK\r\n"
        return self

    async def collect(self, count: int) -> list[str]:
        """Read until ``count`` EVALSHAs were seen (PING ends a wait for none)."""
        while len(self.evalsha) < count:
            line = await asyncio.wait_for(self._reader.readline(), 10)
            m = MONITOR_LINE.match(line)
            if m and m.group(2).upper() == b"EVALSHA":
                self.evalsha.append(m.group(1).decode())
        return self.evalsha

    async def __aexit__(self, *exc: object) -> None:
        self._writer.close()


async def test_writes_made_at_once_go_on_one_connection_in_their_order(redis_url: str) -> None:
    """Forty publishes started together: one pipeline, the stream in the order they
    were made, each caller its own item. Unbatched, each took a pooled connection."""
    async with opened(redis_url) as store, Monitor(redis_url) as monitor:
        subs = [submission(f"Together {n}") for n in range(40)]
        written = await asyncio.gather(*(store.publish(s) for s in subs))
        seen = await monitor.collect(len(subs))
        assert len(set(seen)) == 1, f"{len(set(seen))} connections for one turn's writes"
        entries = await store.range_after((0, 0), None, count=100)
        assert [e.guid for e in entries] == [s.guid for s in subs]
        assert [w.id for w in written] == [e.id for e in entries]
        assert all(w.created for w in written)


async def test_more_than_a_group_at_once_go_in_pipelines_of_group(redis_url: str) -> None:
    count = GROUP * 2 + 7
    async with opened(redis_url) as store, Monitor(redis_url) as monitor:
        subs = [submission(f"Crowd {n}") for n in range(count)]
        await asyncio.gather(*(store.publish(s) for s in subs))
        seen = await monitor.collect(count)
        # Where the address changes, a pipeline ended: none is interleaved
        # with another (each may reuse the one connection).
        changes = [n for n in range(1, count) if seen[n] != seen[n - 1]]
        assert set(changes) <= {GROUP, 2 * GROUP}, changes
        entries = await store.range_after((0, 0), None, count=count + 1)
        assert [e.guid for e in entries] == [s.guid for s in subs]


async def test_a_refused_call_fails_alone_in_its_pipeline(redis_url: str) -> None:
    async with opened(redis_url) as store:
        await store.publish(submission("Gone", guid="gone"))
        await store.withdraw("gone", "wrong story")
        first = await store.publish(submission("Keyed"), idempotency_key="k", digest="a")
        outcomes = await asyncio.gather(
            store.publish(submission("Before", guid="before")),
            store.publish(submission("Reused"), idempotency_key="k", digest="b"),
            store.publish(submission("Again", guid="gone")),
            store.publish(submission("Retry"), idempotency_key="k", digest="a"),
            store.publish(submission("After", guid="after")),
            return_exceptions=True,
        )
        assert isinstance(outcomes[1], IdempotencyKeyReused)
        assert isinstance(outcomes[2], StoryWithdrawn)
        retry = outcomes[3]
        assert isinstance(retry, Written) and not retry.created
        assert retry.id == first.id, "the retry answers the first write"
        entries = await store.range_after((0, 0), None, count=100)
        assert [e.guid for e in entries][-2:] == ["before", "after"]
        assert [e.id for e in entries][-2:] == [
            o.id for o in (outcomes[0], outcomes[4]) if isinstance(o, Written)
        ]


async def test_a_cancelled_caller_leaves_the_others_their_answers(redis_url: str) -> None:
    async with opened(redis_url) as store:
        tasks = [asyncio.ensure_future(store.publish(submission(f"C{n}"))) for n in range(10)]
        await asyncio.sleep(0)  # every call is made; the pipeline is not sent yet
        tasks[3].cancel()
        done = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(done[3], asyncio.CancelledError)
        assert all(isinstance(d, Written) for n, d in enumerate(done) if n != 3)
        # The cancelled call was already on its way: written once, like a
        # request whose client hung up (its retry with a key answers it).
        assert len(await store.range_after((0, 0), None, count=100)) == 10


async def test_a_lost_redis_fails_every_call_of_the_pipeline_then_recovers(
    tmp_path: Path,
) -> None:
    server = RedisServer(tmp_path / "redis").start()
    try:
        async with opened(server.url) as store:
            await store.publish(submission("Warm"))
            server.kill()
            failed = await asyncio.wait_for(
                asyncio.gather(
                    *(store.publish(submission(f"Lost {n}")) for n in range(8)),
                    return_exceptions=True,
                ),
                30,
            )
            assert all(isinstance(f, RedisConnectionError) for f in failed), failed
            server.start()
            again = await store.publish(submission("Back"))
            assert again.created
            entries = await store.range_after((0, 0), None, count=100)
            assert [e.id for e in entries] == [again.id]  # no persistence: a fresh Redis
    finally:
        server.stop()
