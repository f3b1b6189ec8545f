"""The Redis edge: publishing into the item stream and reading it back.

Publishing is one Lua script, so the idempotency record, the story's version
counter and the stream entry are written together or not at all: a publisher
killed mid-request leaves either nothing or a complete item that a retry with
the same Idempotency-Key finds.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import orjson
import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel

from wire import keys
from wire.entry import Entry, with_id
from wire.errors import IdempotencyKeyReused
from wire.ids import StreamKey, format_id
from wire.items import Submission, published_now
from wire.settings import Settings
from wire.tags import match_keys

# KEYS: stream, story, story tags, story ids, idempotency key (or "" when none)
# ARGV: head, tail, explicit mark JSON, tags, urgency, guid, maxlen, minid,
#       body hash, idempotency ttl, story ttl, tag 1..n
_PUBLISH = """
if KEYS[5] ~= '' then
  local prev = redis.call('GET', KEYS[5])
  if prev then
    local sep = string.find(prev, '\\n', 1, true)
    if string.sub(prev, 1, sep - 1) ~= ARGV[9] then return {'reused'} end
    local rest = string.sub(prev, sep + 1)
    local sep2 = string.find(rest, '\\n', 1, true)
    return {'existing', string.sub(rest, 1, sep2 - 1), string.sub(rest, sep2 + 1)}
  end
end
local v = redis.call('HINCRBY', KEYS[2], 'version', 1)
local mark = ARGV[3]
if mark == 'null' and v > 1 then mark = '"Updated"' end
local json = ARGV[1] .. v .. ',"mark":' .. mark .. ARGV[2]
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[7], '*',
                      'j', json, 't', ARGV[4], 'u', ARGV[5], 'g', ARGV[6])
redis.call('XTRIM', KEYS[1], 'MINID', '~', ARGV[8])
for i = 12, #ARGV do redis.call('SADD', KEYS[3], ARGV[i]) end
redis.call('RPUSH', KEYS[4], id)
for i = 2, 4 do redis.call('EXPIRE', KEYS[i], ARGV[11]) end
if KEYS[5] ~= '' then
  redis.call('SET', KEYS[5], ARGV[9] .. '\\n' .. id .. '\\n' .. json, 'EX', ARGV[10])
end
return {'new', id, json}
"""


@dataclass(frozen=True, slots=True)
class Published:
    """What a publish returns: the item's JSON (with id) and whether it is new."""

    id: str
    json: bytes
    created: bool


def connect(url: str, *, socket_timeout: float | None = 5.0) -> aioredis.Redis:
    """A Redis client for ``redis://``, ``rediss://``, ``unix://`` or a Sentinel URL.

    ``redis+sentinel://h1:26379,h2:26379/mymaster`` asks the Sentinels for the
    current primary on every (re)connect, so a failover is followed without a
    restart.
    """
    if url.startswith("redis+sentinel://"):
        parts = urlsplit(url)
        hosts = []
        for hp in parts.netloc.split("@")[-1].split(","):
            host, _, port = hp.rpartition(":")
            hosts.append((host or "127.0.0.1", int(port or 26379)))
        service = unquote(parts.path.strip("/")) or "mymaster"
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            hosts, socket_timeout=socket_timeout, socket_connect_timeout=2.0
        )
        return cast(
            aioredis.Redis,
            sentinel.master_for(service, socket_timeout=socket_timeout, socket_connect_timeout=2.0),
        )
    return aioredis.Redis.from_url(
        url,
        socket_timeout=socket_timeout,
        socket_connect_timeout=2.0,
        health_check_interval=30,
    )


def body_hash(data: object) -> str:
    """A stable digest of a request body, for Idempotency-Key comparisons."""
    return hashlib.sha256(orjson.dumps(data, option=orjson.OPT_SORT_KEYS)).hexdigest()


class Store:
    """Reads and writes the item stream for the publisher and the gateway."""

    def __init__(self, redis: aioredis.Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self._publish = redis.register_script(_PUBLISH)

    async def publish(
        self, sub: Submission, *, idempotency_key: str | None = None, digest: str = ""
    ) -> Published:
        """Append a new version of ``sub``'s story; idempotent per key and body."""
        head, tail = _split_json(sub)
        now_ms = int(time.time() * 1000)
        minid = max(0, now_ms - int(self.settings.retention_days * 86_400_000))
        story_ttl = int(self.settings.retention_days * 86_400) + 86_400
        result = await self._publish(
            keys=[
                keys.STREAM,
                keys.story(sub.guid),
                keys.story_tags(sub.guid),
                keys.story_ids(sub.guid),
                keys.idempotency(idempotency_key) if idempotency_key else "",
            ],
            args=[
                head,
                tail,
                orjson.dumps(sub.mark),
                " ".join(sub.tags),
                sub.urgency,
                sub.guid,
                self.settings.max_items,
                minid,
                digest,
                self.settings.idempotency_ttl,
                story_ttl,
                *sub.tags,
            ],
        )
        status = result[0].decode()
        if status == "reused":
            raise IdempotencyKeyReused(
                "this Idempotency-Key was already used with a different body"
            )
        entry_id = result[1].decode()
        if self.settings.replica_acks > 0:
            await self.redis.execute_command(  # type: ignore[no-untyped-call]
                "WAIT", self.settings.replica_acks, 1000
            )
        return Published(entry_id, with_id(entry_id, result[2]), status == "new")

    async def get(self, entry_id: str) -> Entry | None:
        """One entry by id, or None when unknown (or trimmed)."""
        rows = await self.redis.xrange(keys.STREAM, entry_id, entry_id, count=1)
        return _entries(rows)[0] if rows else None

    async def last_key(self) -> StreamKey:
        """The id of the newest entry, (0, 0) for an empty stream."""
        rows = await self.redis.xrevrange(keys.STREAM, count=1)
        return _entries(rows)[0].key if rows else (0, 0)

    async def trimmed_before(self) -> StreamKey:
        """The greatest id ever trimmed away by retention ((0, 0) if none)."""
        try:
            info = await self.redis.xinfo_stream(keys.STREAM)
        except aioredis.ResponseError:  # no such key: nothing stored, nothing trimmed
            return (0, 0)
        raw = info.get("max-deleted-entry-id", b"0-0")
        ms, _, seq = (raw.decode() if isinstance(raw, bytes) else str(raw)).partition("-")
        return int(ms), int(seq or 0)

    async def length(self) -> int:
        """Number of entries currently kept."""
        return await self.redis.xlen(keys.STREAM)

    async def read_new(self, after: StreamKey, *, count: int, block_ms: int | None) -> list[Entry]:
        """Entries after ``after`` (the gateway's one blocking reader uses this)."""
        reply: Any = await self.redis.xread(
            {keys.STREAM: format_id(after)}, count=count, block=block_ms
        )
        if not reply:
            return []
        return _entries(reply[0][1])

    async def range_after(
        self, after: StreamKey, upto: StreamKey | None, *, count: int
    ) -> list[Entry]:
        """Up to ``count`` entries with after < id <= upto, oldest first."""
        end = format_id(upto) if upto is not None else "+"
        rows = await self.redis.xrange(keys.STREAM, "(" + format_id(after), end, count=count)
        return _entries(rows)

    async def range_before(self, before: StreamKey | None, *, count: int) -> list[Entry]:
        """Up to ``count`` entries with id < before (or the newest), newest first."""
        start = "(" + format_id(before) if before is not None else "+"
        rows = await self.redis.xrevrange(keys.STREAM, start, "-", count=count)
        return _entries(rows)

    async def scan_after(
        self,
        after: StreamKey,
        subscription: Iterable[str],
        limit: int,
        upto: StreamKey | None = None,
    ) -> list[Entry]:
        """Matching entries after ``after`` (up to ``upto``), oldest first, at most ``limit``."""
        wanted = frozenset(subscription)
        found: list[Entry] = []
        cursor = after
        while len(found) < limit:
            page = await self.range_after(cursor, upto, count=1000)
            found.extend(e for e in page if not match_keys(e.tags).isdisjoint(wanted))
            if len(page) < 1000:
                break
            cursor = page[-1].key
        return found[:limit]

    async def scan_latest(
        self, subscription: Iterable[str], limit: int, before: StreamKey | None = None
    ) -> list[Entry]:
        """The newest ``limit`` matching entries (older than ``before``), newest first."""
        wanted = frozenset(subscription)
        found: list[Entry] = []
        cursor = before
        while len(found) < limit:
            page = await self.range_before(cursor, count=1000)
            found.extend(e for e in page if not match_keys(e.tags).isdisjoint(wanted))
            if len(page) < 1000:
                break
            cursor = page[-1].key
        return found[:limit]

    async def ping(self) -> bool:
        """True when Redis answers."""
        return bool(await self.redis.ping())


def _entries(rows: Any) -> list[Entry]:
    return [Entry.from_fields(eid, fields) for eid, fields in rows]


def _split_json(sub: Submission) -> tuple[bytes, bytes]:
    """The stored JSON around the version and mark, which the script fills in.

    Layout: ``{"guid":..,"version":<v>,"mark":<m>,"published_at":..,...}``.
    """
    head = b'{"guid":' + orjson.dumps(sub.guid) + b',"version":'
    rest = orjson.dumps(
        {
            "published_at": published_now(),
            "urgency": sub.urgency,
            "title": sub.title,
            "subtitle": sub.subtitle,
            "tags": list(sub.tags),
            "url": sub.url,
            "body": sub.body,
        }
    )
    return head, b"," + rest[1:]
