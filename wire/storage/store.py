"""The Redis edge: publishing into the item stream and reading it back.

Publishing is one Lua script, so the idempotency record, the story's version
counter and the stream entry are written together or not at all: a publisher
killed mid-request leaves either nothing or a complete item that a retry with
the same Idempotency-Key finds.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, cast
from urllib.parse import unquote, urlsplit

import orjson
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ReadOnlyError

from wire.core import stored
from wire.core.entitlements import Sees
from wire.core.entry import Entry
from wire.core.errors import (
    IdempotencyKeyReused,
    KeyConflict,
    NotFound,
    ServiceUnavailable,
    StoryWithdrawn,
    ValidationError,
    WireError,
)
from wire.core.ids import ZERO, StreamKey, format_id, parse_id, preceding
from wire.core.items import Submission
from wire.core.resume import Kept, Window
from wire.core.stored import Layout, published_now, with_id
from wire.runtime.settings import Settings
from wire.runtime.shared import Shared
from wire.storage import keys, scripts, story_pages
from wire.storage.coalescer import Coalescer
from wire.storage.pipeline import run_scripts
from wire.storage.story_pages import StoryPage

PAGE = 1000  # entries per XRANGE while scanning history
#: The most tags of a story's union read to tell a limited reader "none of
#: its versions is yours" without reading one (Store.story_maybe_seen).
MAX_STORY_TAGS = 1000
#: Translations a story read lists at most (Store.translations).
MAX_TRANSLATIONS = 200
#: Bytes of stored item JSON one history page reads from Redis (the entry that
#: reaches it is the page's last): items can be 400 KB each, and a page bounded
#: by count alone was 400 MB, in Redis's reply buffer and in this process.
PAGE_BYTES = 1 << 20
#: Bytes of item JSON one history answer (``GET /v1/items``, a backfill)
#: carries, about: past it the answer ends early with its ``next`` cursor, as
#: when the scan budget runs out (500 items of 400 KB were a 200 MB answer).
ANSWER_BYTES = 4 << 20
#: Bytes of stored item JSON one budgeted history read scans at most, whatever
#: its entry budget (``WIRE_SCAN_BUDGET``) still allows.
SCAN_BYTES = 32 << 20
#: Due embargoes released per script: big enough that 5,000 due at one moment
#: go out in ten round trips, small enough that Redis is busy for only a few
#: milliseconds per script.
RELEASE_BATCH = 500
#: How long an embargo whose story keys hold a foreign type waits before the
#: next attempt (an operator can repair the key meanwhile).
CONFLICT_RETRY_MS = 60_000

#: Why the write scripts refuse an item (their status "invalid"), by field.
_INVALID = {
    "correction": "correction is only for a story that exists: publish its first version"
    " without it",
}

log = logging.getLogger("wire.storage.store")


@dataclass(frozen=True, slots=True)
class Scan:
    """A bounded history read: what it found, and where to go on from.

    ``next`` is None when the read reached the end (of the stream, or of its
    range); otherwise a later read from it (exclusive) continues without
    missing or repeating anything, whether the limit or the budget ended it.
    """

    entries: list[Entry]
    next: StreamKey | None
    #: Ranges after the cursor that retention removed before the read reached
    #: them (see :meth:`Store.history_after`): each lies before ``next``.
    gaps: tuple[Window, ...] = ()


class Filter(NamedTuple):
    """What a history read keeps: entries matching ``keys`` (subscription keys)
    and, when ``languages`` is not empty, in one of those languages."""

    keys: frozenset[str]
    languages: frozenset[str] = frozenset()

    def passes(self, entry: Entry) -> bool:
        """True when ``entry`` is one to return.

        A withdrawal passes any language filter: a kill notice carries no
        language, and whoever may have the story must learn of it.
        """
        if not entry.matches(self.keys):
            return False
        return not self.languages or entry.withdrawal or entry.language in self.languages


def _info_text(info: dict[str, Any], name: str) -> str:
    """An ``XINFO STREAM`` field as text (values come as str, bytes or int)."""
    raw = info.get(name)
    return raw.decode() if isinstance(raw, bytes) else str(raw or "0")


def _info_key(info: dict[str, Any], name: str) -> StreamKey:
    """An id field of ``XINFO STREAM`` (a missing one, or ``0``, is 0-0)."""
    raw = _info_text(info, name)
    return parse_id(raw if raw != "0" else "0-0", field=name)


def kept_of(info: dict[str, Any]) -> Kept:
    """What retention removed and the oldest entry kept, from ``XINFO STREAM``'s
    fields (those missing count as nothing trimmed)."""
    trimmed = _info_key(info, "max-deleted-entry-id")
    length = int(_info_text(info, "length"))
    first = _info_key(info, "recorded-first-entry-id") if length else None
    # Redis 7.0 does not move max-deleted-entry-id on XTRIM, which is how
    # retention removes entries: when fewer entries remain than were ever
    # added, everything before the first one kept is gone too.
    if int(_info_text(info, "entries-added")) > length:
        end = preceding(first) if first is not None else _info_key(info, "last-generated-id")
        trimmed = max(trimmed, end)
    return Kept(trimmed, first)


class Retention(NamedTuple):
    """What the write scripts keep: stream length and age, and the story keys' ttl (s)."""

    maxlen: int
    minid: int
    story_ttl: int


#: The most bytes of a schedule member a cursor carries (the wire's own are
#: 71): one written by hand may be longer than a URL can hold.
CURSOR_MEMBER = 300


class EmbargoCursor(NamedTuple):
    """Where a listing of the embargo schedule goes on: after this member, whose
    score (its due time in ms) is given as Redis wrote it, so it compares exactly.

    A member longer than :data:`CURSOR_MEMBER` is cut to it, and the listing
    goes on past every member that begins so (only damaged data is that long).
    """

    score: bytes
    member: bytes


def retention(settings: Settings) -> Retention:
    """Stream MAXLEN, stream MINID and the story keys' ttl (also the delivery ledger's)."""
    now_ms = int(time.time() * 1000)
    minid = max(0, now_ms - int(settings.retention_days * 86_400_000))
    story_ttl = int(settings.retention_days * 86_400) + 86_400
    return Retention(settings.max_items, minid, story_ttl)


#: Reads one page from a cursor: (entries, True when the range may hold more).
_Read = Callable[[StreamKey | None, int], Awaitable[tuple[list[Entry], bool]]]


@dataclass(frozen=True, slots=True)
class Written:
    """What a write (publish, withdrawal, embargo) answers: the stored JSON (with
    its id; an embargoed item has none yet) and whether this call created it."""

    id: str
    json: bytes
    created: bool


@dataclass(frozen=True, slots=True)
class Write:
    """One item of a batch publish: the item, its idempotency key and body digest."""

    sub: Submission
    key: str | None = None
    digest: str = ""


def connect(url: str, *, socket_timeout: float | None = 5.0) -> aioredis.Redis:
    """A Redis client for ``redis://``, ``rediss://``, ``unix://`` or a Sentinel URL.

    ``redis+sentinel://h1:26379,h2:26379/mymaster`` asks the Sentinels for the
    current primary on every (re)connect, so a failover is followed without a
    restart.

    redis-py's automatic retries are off: re-sending a publish script whose
    answer was lost could store the item twice when the editor sent no
    Idempotency-Key. Callers see the error (HTTP 503) and retry with the key;
    the gateway's reader retries on its own, from the last id it delivered.
    """
    no_retry = Retry(NoBackoff(), 0)
    if url.startswith("redis+sentinel://"):
        parts = urlsplit(url)
        hosts = []
        for hp in parts.netloc.split("@")[-1].split(","):
            host, _, port = hp.rpartition(":")
            hosts.append((host or "127.0.0.1", int(port or 26379)))
        service = unquote(parts.path.strip("/")) or "mymaster"
        sentinel = Sentinel(  # type: ignore[no-untyped-call, unused-ignore]
            hosts, socket_timeout=socket_timeout, socket_connect_timeout=2.0
        )
        return cast(
            aioredis.Redis,
            sentinel.master_for(
                service,
                socket_timeout=socket_timeout,
                socket_connect_timeout=2.0,
                retry=no_retry,
            ),
        )
    # A blocking pool: past max_connections a command waits for a free
    # connection (redis-py's default pool raises "Too many connections" at
    # 100 in flight, which a resume storm or a publish burst reaches at once).
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=64,
        timeout=20,
        socket_timeout=socket_timeout,
        socket_connect_timeout=2.0,
        health_check_interval=30,
        retry=no_retry,
    )
    pool.connection_class = _following_failovers(pool.connection_class)
    return aioredis.Redis.from_pool(pool)


def _following_failovers(base: type[Any]) -> type[Any]:
    """``base`` (TCP, TLS or Unix socket connection) that reconnects once its node
    answered READONLY.

    Behind one address (a managed Redis's endpoint, a DNS name, a proxy) a
    failover moves the address to the new primary, but an open connection
    stays with the old one, now a read-only replica: every write on it would
    be refused for as long as it lives. The refused reply is still answered
    (503, nothing written); the connection is closed before its next command,
    which reconnects through the address. (Sentinel URLs do this in redis-py.)
    A pipeline's remaining replies are read first, so each call keeps its own.
    """

    class Following(base):  # type: ignore[misc]
        demoted = False

        async def read_response(self, *args: Any, **kwargs: Any) -> Any:
            try:
                return await super().read_response(*args, **kwargs)
            except ReadOnlyError:
                self.demoted = True
                raise

        async def send_packed_command(self, *args: Any, **kwargs: Any) -> None:
            if self.demoted:
                self.demoted = False
                await self.disconnect()
            await super().send_packed_command(*args, **kwargs)

    Following.__name__ = Following.__qualname__ = f"Following{base.__name__}"
    return Following


def body_hash(data: object) -> str:
    """A stable digest of a request body, for Idempotency-Key comparisons."""
    return hashlib.sha256(orjson.dumps(data, option=orjson.OPT_SORT_KEYS)).hexdigest()


class Store:
    """Reads and writes the item stream for the publisher and the gateway."""

    def __init__(self, redis: aioredis.Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self._kept: Shared[Kept] = Shared(self._read_kept)
        self._publish = redis.register_script(scripts.PUBLISH)
        self._withdraw = redis.register_script(scripts.WITHDRAW)
        self._embargo = redis.register_script(scripts.EMBARGO)
        self._cancel = redis.register_script(scripts.CANCEL_EMBARGO)
        self._embargo_page = redis.register_script(scripts.EMBARGO_PAGE)
        self._release = redis.register_script(scripts.RELEASE)
        self._range = redis.register_script(scripts.RANGE)
        self._tags = redis.register_script(scripts.STORY_TAGS)
        self._stories = story_pages.StoryReader(redis)
        self._single = Coalescer(redis, settings.replica_acks)

    async def publish(
        self, sub: Submission, *, idempotency_key: str | None = None, digest: str = ""
    ) -> Written:
        """Append a new version of ``sub``'s story; idempotent per key and body."""
        call = self._publish_call(
            sub, idempotency_key, digest, stored.layout(published_now()), self._retention()
        )
        result, acked = await self._write(self._publish, call)
        status, entry_id, json = self._answer(result, acked)
        return Written(entry_id, with_id(entry_id, json), status == "new")

    def _publish_call(
        self, sub: Submission, key: str | None, digest: str, shared: Layout, kept: Retention
    ) -> scripts.PublishArgs:
        """The :data:`~wire.storage.scripts.PUBLISH` call that appends ``sub``."""
        item = stored.pieces(sub)
        return scripts.PublishArgs(
            stream=keys.STREAM,
            story=keys.story(sub.guid),
            story_tags=keys.story_tags(sub.guid),
            story_ids=keys.story_ids(sub.guid),
            idempotency=keys.idempotency(key) if key else "",
            translations=keys.translations(sub.translation_of) if sub.translation_of else "",
            original=keys.story(sub.translation_of) if sub.translation_of else "",
            guid=sub.guid,
            head=item.head,
            mark=item.mark,
            rest=item.rest,
            tags=item.tags,
            urgency=item.urgency,
            mark_key=shared.mark_key,
            no_mark=shared.no_mark,
            updated=shared.updated,
            stamp=shared.stamp,
            maxlen=kept.maxlen,
            minid=kept.minid,
            story_ttl=kept.story_ttl,
            digest=digest,
            idempotency_ttl=self.settings.idempotency_ttl,
            correction="1" if sub.correction else "0",
        )

    async def publish_batch(self, writes: Sequence[Write]) -> list[Written | WireError]:
        """Publish (or, when embargoed, schedule) every write in one Redis round trip.

        Each write is its own atomic script call, run in the order given (so
        the stream holds a batch's items in that order); one that is refused
        (a reused key, a withdrawn story...) answers its error and stops no
        other. A Redis connection failure raises, as for :meth:`publish`.
        """
        shared, kept = stored.layout(published_now()), self._retention()
        calls: list[tuple[AsyncScript, scripts.ScriptArgs]] = []
        for w in writes:
            if w.sub.embargo_until is None:
                calls.append(
                    (self._publish, self._publish_call(w.sub, w.key, w.digest, shared, kept))
                )
            else:
                pending = orjson.dumps(w.sub.pending())
                calls.append((self._embargo, self._embargo_call(w.sub, pending, w.key, w.digest)))
        outcomes = await run_scripts(
            self.redis, calls, replica_acks=max(0, self.settings.replica_acks)
        )
        pairs = zip(writes, outcomes, strict=True)
        return [self._batch_answer(w, reply, acked) for w, (reply, acked) in pairs]

    def _batch_answer(self, write: Write, reply: Any, acked: int) -> Written | WireError:
        """One batch call's :class:`Written`, or the error it is answered with."""
        if isinstance(reply, Exception):
            # Redis refused the call (out of memory, a read-only replica after
            # a failover, a flushed script cache): nothing of it was written.
            log.warning("batch publish: redis refused a write: %s", reply)
            return ServiceUnavailable(f"redis refused the write ({reply}); retry")
        try:
            status, entry_id, json = self._answer(reply, acked)
        except WireError as err:
            return err
        if write.sub.embargo_until is not None:
            return Written("", json, status == "new")
        return Written(entry_id, with_id(entry_id, json), status == "new")

    def _retention(self) -> Retention:
        """Stream MAXLEN, stream MINID and the story keys' ttl, for the write scripts."""
        return retention(self.settings)

    async def _write(
        self, script: AsyncScript, call: scripts.ScriptArgs
    ) -> tuple[list[bytes], int]:
        """Run a write script and, with ``replica_acks``, WAIT on its connection.

        WAIT counts the replicas that have the writes of its own connection:
        sent separately, from the pool, it may run on another connection and
        return at once whatever the replicas hold. So the call and its WAIT go
        in one write on one connection, with the other single writes made in
        the same turn of the loop (:class:`~wire.storage.coalescer.Coalescer`).
        (A script that finds an earlier answer still writes, so that the WAIT
        then covers the original entry too.)

        A call Redis refuses (out of memory, a read-only replica after a
        failover, a script cache flushed again and again) wrote nothing: it is
        a 503 to retry, as for a batch's items (:meth:`_batch_answer`), not a
        500 that leaves the editor unsure whether the item went out.
        """
        try:
            return await self._single.run(script, call)
        except aioredis.ResponseError as err:
            log.warning("redis refused a write: %s", err)
            raise ServiceUnavailable(f"redis refused the write ({err}); retry") from err

    def _answer(self, result: list[bytes], acked: int = 0) -> tuple[str, str, bytes]:
        """A write script's (status, stream id, JSON), or the error its status means."""
        status = result[0].decode()
        if status == "reused":
            raise IdempotencyKeyReused(
                "this Idempotency-Key was already used with a different body"
            )
        if status == "withdrawn":
            raise StoryWithdrawn("this story was withdrawn; publish it under a new guid")
        if status == "original_withdrawn":
            raise StoryWithdrawn(
                "the story this translates was withdrawn: its translation is not published",
                field="translation_of",
            )
        if status == "unknown":
            raise NotFound("no such story")
        if status == "invalid":
            field = result[1].decode()
            raise ValidationError(_INVALID[field], field=field)
        if status == "conflict":
            raise KeyConflict(f"redis key {result[1].decode()!r} holds a type wire did not write")
        if self.settings.replica_acks > 0 and acked < self.settings.replica_acks:
            # Answer 201 (or 200 to a retry) only once a replica has the entry,
            # so a failover to that replica cannot lose an acknowledged item.
            raise ServiceUnavailable("no replica acknowledged the write in time; retry")
        return status, result[1].decode(), result[2]

    async def withdraw(self, guid: str, reason: str) -> Written:
        """Append the withdrawal of a story (idempotent: a repeat returns the first)."""
        notice, kept = stored.withdrawal_pieces(guid, reason, published_now()), self._retention()
        call = scripts.WithdrawArgs(
            stream=keys.STREAM,
            story=keys.story(guid),
            story_tags=keys.story_tags(guid),
            story_ids=keys.story_ids(guid),
            guid=guid,
            head=notice.head,
            middle=notice.middle,
            tail=notice.tail,
            maxlen=kept.maxlen,
            minid=kept.minid,
            story_ttl=kept.story_ttl,
        )
        result, acked = await self._write(self._withdraw, call)
        status, entry_id, json = self._answer(result, acked)
        return Written(entry_id, with_id(entry_id, json), status == "new")

    async def story_page(self, guid: str, limit: int, before: int | None = None) -> StoryPage:
        """The newest ``limit`` versions of a story numbered below ``before`` (from the
        newest when None), about ANSWER_BYTES of them at most (at least one), oldest
        first; a withdrawn story's as stubs (see :mod:`wire.storage.story_pages`)."""
        return await self._stories.read_page(guid, limit, before, ANSWER_BYTES)

    async def story_maybe_seen(self, guid: str, sees: Sees) -> bool:
        """False when no version of the story can pass ``sees``: none of the tags
        its versions ever had (``keys.story_tags``) does.

        Asked for a limited reader before any version is read, so that a story
        wholly outside its grant costs what a missing one does (one round trip,
        no versions read) and its reads' timing cannot tell that it exists. A
        union of more than :data:`MAX_STORY_TAGS` tags is not read (it grows
        with every version's tags): True, and the bounded search decides.
        """
        found: Any = await self._tags(keys=[keys.story_tags(guid)], args=[MAX_STORY_TAGS + 1])
        size, tags = found
        if size > MAX_STORY_TAGS:
            return True
        return bool(tags) and sees(t.decode() for t in tags)

    async def story_current(self, page: StoryPage, sees: Sees) -> Entry | None:
        """The newest kept version of ``page``'s story whose tags pass ``sees``.

        Searched newest first within the scan budget (entries and SCAN_BYTES,
        what the page itself read counted), so that a story read is bounded
        however many versions lie outside a reader's grant; None when none is
        found there, which the reader is answered like a missing story. The
        story's tag union cannot name the version (a matching one may be long
        trimmed); it only says "none" sooner (:meth:`story_maybe_seen`).
        """
        if page.top != page.newest:  # an older page: search from the newest
            return await self._stories.newest_seen(
                page.guid, page.newest + 1, sees, self._budget, SCAN_BYTES
            )
        # Only as many of the page's versions as the search may read: a bigger
        # page (limit above the scan budget) must not widen it.
        for entry in page.versions[::-1][: self._budget]:
            if sees(entry.tags):
                return entry
        # Nothing older (the page reached version 1 or what retention kept), or
        # a withdrawal not seen: it carries every version's tags.
        if page.older is None or page.withdrawn:
            return None
        spent = sum(len(e.json) for e in page.versions)
        left = self._budget - (page.top - page.older + 1)
        return await self._stories.newest_seen(
            page.guid, page.older, sees, left, SCAN_BYTES - spent
        )

    async def first_published(
        self, guids: Iterable[str], sees: Sees | None = None
    ) -> dict[str, str]:
        """``published_at`` of version 1 of each story, by guid, where still kept
        (two round trips for any number of stories; Atom's ``published``).

        With ``sees`` (a reader's grant), only where version 1's tags pass it:
        a version outside the grant tells that reader nothing, not even its time.
        """
        wanted = sorted(set(guids))
        if not wanted:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for guid in wanted:
                pipe.lindex(keys.story_ids(guid), 0)
            firsts = await pipe.execute()
        pairs = [(g, eid) for g, eid in zip(wanted, firsts, strict=True) if eid]
        if not pairs:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for _, eid in pairs:
                pipe.xrange(keys.STREAM, eid, eid, count=1)
            rows = await pipe.execute()
        found: dict[str, str] = {}
        for (guid, _), row in zip(pairs, rows, strict=True):
            if row:
                entry = _entries(row)[0]
                at = orjson.loads(entry.json).get("published_at")
                visible = sees is None or sees(entry.tags)
                if isinstance(at, str) and not entry.withdrawal and visible:
                    found[guid] = at
        return found

    async def translations(self, guid: str, sees: Sees | None = None) -> list[Entry]:
        """The current version of each story that translates ``guid``, by guid;
        withdrawn translations (and those retention forgot) left out, and those
        whose current version names another original, or none.

        At most :data:`MAX_TRANSLATIONS` of them (a story has a few, one per
        language; the set is the editors' to grow, and a read stays bounded).
        With ``sees`` (a limited reader's grant), each one's newest version the
        reader may see, as a read of that story names it ``current``; those
        with none left out (see :meth:`_newest_seen_of`).
        """
        members: Any = await self.redis.srandmember(keys.translations(guid), MAX_TRANSLATIONS)
        guids = sorted(m.decode() for m in members)
        if not guids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for member in guids:
                pipe.lindex(keys.story_ids(member), -1)
                pipe.hexists(keys.story(member), "withdrawn")
            found = await pipe.execute()
        pairs = zip(found[::2], found[1::2], strict=True)
        current = [eid for eid, gone in pairs if eid and not gone]
        if not current:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for eid in current:
                pipe.xrange(keys.STREAM, eid, eid, count=1)
            rows = await pipe.execute()
        entries = [_entries(r)[0] for r in rows if r]
        if sees is not None:
            entries = await self._newest_seen_of(entries, sees)
        # The link set only grows: a story whose listed version names another
        # original (or none) no longer translates this one.
        return [e for e in entries if orjson.loads(e.json).get("translation_of") == guid]

    async def _newest_seen_of(self, entries: list[Entry], sees: Sees) -> list[Entry]:
        """Each story's newest version ``sees`` passes, searched back from its
        current one (``entries``) within one scan budget shared by them all; the
        stories with none found there left out."""
        hidden = [e for e in entries if not sees(e.tags)]
        found: dict[str, Entry] = {}
        for entry in hidden:
            version = int(orjson.loads(entry.json)["version"])
            seen = await self._stories.newest_seen(
                entry.guid, version, sees, self._budget // len(hidden), SCAN_BYTES // len(hidden)
            )
            if seen is not None:
                found[entry.guid] = seen
        return [found.get(e.guid, e) for e in entries if sees(e.tags) or e.guid in found]

    async def redact(self, entries: list[Entry]) -> list[Entry]:
        """Drop versions of withdrawn stories (their withdrawals stay)."""
        guids = list({e.guid for e in entries if not e.withdrawal})
        if not guids:
            return entries
        async with self.redis.pipeline(transaction=False) as pipe:
            for guid in guids:
                pipe.hexists(keys.story(guid), "withdrawn")
            flags = await pipe.execute()
        gone = {g for g, flag in zip(guids, flags, strict=True) if flag}
        if not gone:
            return entries
        return [e for e in entries if e.withdrawal or e.guid not in gone]

    async def embargo(
        self,
        sub: Submission,
        pending: bytes,
        *,
        idempotency_key: str | None = None,
        digest: str = "",
    ) -> Written:
        """Schedule ``sub`` for release at its embargo time (replacing a pending one).

        Idempotent per key and body like :meth:`publish`: a repeat answers the
        first pending item (``created`` False) and schedules nothing. Refused
        (StoryWithdrawn) for a withdrawn story. The answer has no stream id.
        """
        call = self._embargo_call(sub, pending, idempotency_key, digest)
        result, acked = await self._write(self._embargo, call)
        status, _, json = self._answer(result, acked)
        return Written("", json, status == "new")

    def _embargo_call(
        self, sub: Submission, pending: bytes, key: str | None, digest: str
    ) -> scripts.EmbargoArgs:
        """The :data:`~wire.storage.scripts.EMBARGO` call that schedules ``sub``."""
        assert sub.embargo_until is not None
        item, original = stored.pieces(sub), sub.translation_of
        return scripts.EmbargoArgs(
            schedule=keys.EMBARGOES,
            item=keys.embargo(sub.guid),
            story=keys.story(sub.guid),
            story_tags=keys.story_tags(sub.guid),
            story_ids=keys.story_ids(sub.guid),
            idempotency=keys.idempotency(key) if key else "",
            translations=keys.translations(original) if original else "",
            original=keys.story(original) if original else "",
            due_ms=int(sub.embargo_until.timestamp() * 1000),
            pending=pending,
            guid=sub.guid,
            head=item.head,
            mark=item.mark,
            rest=item.rest,
            tags=item.tags,
            urgency=item.urgency,
            digest=digest,
            idempotency_ttl=self.settings.idempotency_ttl,
            correction="1" if sub.correction else "0",
        )

    async def embargoes(
        self, limit: int, after: EmbargoCursor | None = None
    ) -> tuple[list[bytes], EmbargoCursor | None]:
        """Up to ``limit`` pending embargoed items (JSON), soonest first, after
        ``after``; and the cursor to go on from, or None at the end."""
        score, member = after if after is not None else (b"", b"")
        names, args = scripts.EmbargoPageArgs(
            schedule=keys.EMBARGOES,
            after_score=score,
            after_member=member,
            limit=limit,
            after_cut=int(len(member) >= CURSOR_MEMBER),
        ).lists()
        rows: Any = await self._embargo_page(keys=names, args=args)
        pending = [row[2] for row in rows if row[2]]
        if len(rows) < limit:
            return pending, None
        return pending, EmbargoCursor(bytes(rows[-1][1]), bytes(rows[-1][0][:CURSOR_MEMBER]))

    async def embargo_pending(self, guid: str) -> bool:
        """True when an embargoed item of ``guid`` waits for its time."""
        return await self.redis.zscore(keys.EMBARGOES, keys.embargo(guid)) is not None

    async def cancel_embargo(self, guid: str) -> bool:
        """Cancel a pending embargoed item; False when there was none."""
        names, args = scripts.CancelArgs(schedule=keys.EMBARGOES, item=keys.embargo(guid)).lists()
        return bool(await self._cancel(keys=names, args=args))

    async def release_embargoes(
        self, now_ms: int, limit: int = RELEASE_BATCH
    ) -> list[tuple[str, str, str]]:
        """Publish up to ``limit`` items due by ``now_ms`` in one script, soonest first.

        Answers (status, guid, stream id or detail) per item handled; see
        ``scripts.RELEASE``. Fewer than ``limit`` answers: nothing more is due.
        """
        shared, kept = stored.layout(published_now()), self._retention()
        call = scripts.ReleaseArgs(
            stream=keys.STREAM,
            schedule=keys.EMBARGOES,
            now_ms=now_ms,
            batch=limit,
            mark_key=shared.mark_key,
            no_mark=shared.no_mark,
            updated=shared.updated,
            stamp=shared.stamp,
            maxlen=kept.maxlen,
            minid=kept.minid,
            story_ttl=kept.story_ttl,
            retry_ms=CONFLICT_RETRY_MS,
        )
        result, acked = await self._write(self._release, call)
        if result and acked < self.settings.replica_acks:
            # Released is released (it cannot be taken back); say it is at risk.
            log.warning("embargo release: no replica acknowledged %d items", len(result) // 3)
        it = iter(v.decode() for v in result)
        return list(zip(it, it, it, strict=True))

    async def get(self, entry_id: str) -> Entry | None:
        """One entry by id, or None when unknown (or trimmed)."""
        rows = await self.redis.xrange(keys.STREAM, entry_id, entry_id, count=1)
        return _entries(rows)[0] if rows else None

    async def last_key(self) -> StreamKey:
        """The id of the newest entry, (0, 0) for an empty stream."""
        rows = await self.redis.xrevrange(keys.STREAM, count=1)
        return _entries(rows)[0].key if rows else (0, 0)

    async def last_generated(self) -> StreamKey | None:
        """The last id the stream ever made ((0, 0): there is no stream; None:
        Redis would not say, e.g. an ACL that refuses ``XINFO``).

        Unlike the newest entry, retention never moves it back: it is behind
        an id this wire once read only when Redis lost the stream.
        """
        try:
            info = await self.redis.xinfo_stream(keys.STREAM)
        except aioredis.ResponseError as err:
            return ZERO if "no such key" in str(err).lower() else None
        return _info_key(info, "last-generated-id")

    async def kept(self) -> Kept:
        """What retention removed and the oldest entry kept (see :class:`Kept`).

        Concurrent callers (a resume storm: thousands of clients at once)
        share one ``XINFO`` in flight instead of sending one each, so an
        answer is at most one round trip old.
        """
        return await self._kept()

    async def _read_kept(self) -> Kept:
        try:
            info = await self.redis.xinfo_stream(keys.STREAM)
        except aioredis.ResponseError:
            # No such key: nothing stored, nothing trimmed. (An ACL refusing
            # XINFO lands here too: the wire then cannot tell what is lost.)
            return Kept(ZERO, None)
        return kept_of(info)

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
        if before == ZERO:  # nothing precedes 0-0, and Redis refuses the range "(0-0"
            return []
        start = "(" + format_id(before) if before is not None else "+"
        rows = await self.redis.xrevrange(keys.STREAM, start, "-", count=count)
        return _entries(rows)

    async def pages_after(
        self,
        after: StreamKey,
        upto: StreamKey | None,
        keys: frozenset[str],
        budget: int | None = None,
        languages: frozenset[str] = frozenset(),
        gaps: list[Window] | None = None,
    ) -> AsyncIterator[list[Entry]]:
        """Entries matching ``keys`` with after < id <= upto, a page at a time, oldest
        first, withdrawn versions left out (every history read goes through here).

        Without a ``budget`` the read is complete (a resume must be); with one it
        stops after that many stream entries, matching or not. ``languages``
        (when not empty) keeps only items in one of them (see :class:`Filter`).
        A read slower than retention may find entries gone before it reached
        them: each such range is added to ``gaps`` (when given), as it is found.
        """
        read = self._reader_after(upto, gaps)
        async for found, _ in self._walk(read, after, Filter(keys, languages), budget):
            yield found

    async def pages_to_end(
        self, after: StreamKey, wanted: Filter, budget: int
    ) -> AsyncIterator[tuple[list[Entry], bool]]:
        """Like :meth:`pages_after` to the stream's end within ``budget``, each page
        with True once the end was reached (False: more may follow, or the budget
        ran out), so a count can say whether it is exact."""
        async for found, onward in self._walk(self._reader_after(None), after, wanted, budget):
            yield found, onward is None

    async def pages_raw(
        self, after: StreamKey, upto: StreamKey | None, gaps: list[Window] | None = None
    ) -> AsyncIterator[tuple[list[Entry], bool]]:
        """Every entry with after < id <= upto, unfiltered and unredacted, oldest
        first, in pages of about PAGE_BYTES: (page, whether more may remain).

        A short page does not mean the range ended (a page of big items is
        short); only the second element says so. Ranges lost before they were
        read go to ``gaps`` (when given), as for :meth:`pages_after`.
        """
        read, cursor = self._reader_after(upto, gaps), after
        while True:
            page, more = await read(cursor, PAGE)
            more = more and bool(page)
            yield page, more
            if not more:
                return
            cursor = page[-1].key

    async def pages_before(
        self,
        before: StreamKey | None,
        keys: frozenset[str],
        budget: int | None = None,
        languages: frozenset[str] = frozenset(),
    ) -> AsyncIterator[list[Entry]]:
        """Like :meth:`pages_after`, newest first, from before ``before`` (or the end)."""
        wanted = Filter(keys, languages)
        async for found, _ in self._walk(self._reader_before, before, wanted, budget):
            yield found

    @property
    def _budget(self) -> int:
        return max(1, self.settings.scan_budget)

    async def _page(
        self, low: str, high: str, count: int, newest_first: bool = False
    ) -> tuple[list[Entry], bool, Kept]:
        """Up to ``count`` entries and about PAGE_BYTES of them (see ``scripts.RANGE``),
        whether more may follow, and what the stream kept when they were read."""
        args: list[str | int] = [low, high, count, PAGE_BYTES, 1 if newest_first else 0]
        rows, ended, trim = await self._range(keys=[keys.STREAM], args=args)
        entries = [
            Entry.from_fields(eid, dict(zip(f[::2], f[1::2], strict=True))) for eid, f in rows
        ]
        fields = {name.decode(): value for name, value in zip(trim[::2], trim[1::2], strict=True)}
        return entries, not ended, kept_of(fields)

    async def _reader_before(
        self, cursor: StreamKey | None, count: int
    ) -> tuple[list[Entry], bool]:
        if cursor == ZERO:  # nothing precedes 0-0, and Redis refuses the range "(0-0"
            return [], False
        high = "(" + format_id(cursor) if cursor is not None else "+"
        page, more, _ = await self._page("-", high, count, newest_first=True)
        return page, more

    def _reader_after(self, upto: StreamKey | None, gaps: list[Window] | None = None) -> _Read:
        """Reads forward up to ``upto``; with ``gaps``, each range that was lost after
        the cursor before it was read (see :meth:`Kept.lost_upto`) is added to it."""
        high = format_id(upto) if upto is not None else "+"

        async def read(cursor: StreamKey | None, count: int) -> tuple[list[Entry], bool]:
            assert cursor is not None
            page, more, kept = await self._page("(" + format_id(cursor), high, count)
            lost = kept.lost_upto(cursor)
            end = lost if upto is None else min(lost, upto)
            if gaps is not None and end > cursor:  # not a window already read to its end
                gaps.append(Window(cursor, end))
            return page, more

        return read

    async def _walk(
        self, read: _Read, cursor: StreamKey | None, wanted: Filter, budget: int | None
    ) -> AsyncIterator[tuple[list[Entry], StreamKey | None]]:
        """(matching entries of a page, where to go on from): the second is None
        once the stream ends, so a reader can tell "ran out of budget" from "done"."""
        left, scanned = budget, 0
        while True:
            count = PAGE if left is None else max(0, min(PAGE, left))
            page, more = await read(cursor, count) if count else ([], False)
            more = more and bool(page)
            if page:
                cursor = page[-1].key
            if left is not None:
                left -= len(page)
                # The budget counts bytes too: 5,000 entries of 400 KB are 2 GB
                # to ship from Redis for an answer that may be empty.
                scanned += sum([len(e.json) for e in page])
                if scanned >= SCAN_BYTES:
                    left = 0
            found = await self.redact([e for e in page if wanted.passes(e)]) if page else []
            yield found, cursor if more else None
            if not more or left == 0:
                return

    async def history_after(
        self,
        after: StreamKey,
        subscription: Iterable[str],
        limit: int,
        upto: StreamKey | None = None,
        languages: Iterable[str] = (),
    ) -> Scan:
        """Up to ``limit`` matching entries after ``after``, oldest first, reading at
        most ``scan_budget`` entries; ``next`` says where to continue.
        ``languages`` (when given) narrows the tag match (see :class:`Filter`).
        ``gaps`` are the ranges retention had removed after the cursor when a
        page was read (a cursor older than what is kept, or trimmed mid-read);
        a read that found only gaps goes on from past them (``next``), so that
        the next read from there does not find them again."""
        wanted = Filter(frozenset(subscription), frozenset(languages))
        gaps: list[Window] = []
        pages = self._walk(self._reader_after(upto, gaps), after, wanted, self._budget)
        scan = await _first(pages, limit)
        if not gaps:
            return scan
        going_on = scan.next if scan.next is not None or scan.entries else gaps[-1].upto
        return Scan(scan.entries, going_on, tuple(gaps))

    async def history_before(
        self,
        subscription: Iterable[str],
        limit: int,
        before: StreamKey | None = None,
        languages: Iterable[str] = (),
    ) -> Scan:
        """Like :meth:`history_after`, newest first, from before ``before`` (or the end)."""
        wanted = Filter(frozenset(subscription), frozenset(languages))
        pages = self._walk(self._reader_before, before, wanted, self._budget)
        return await _first(pages, limit)

    async def scan_after(
        self,
        after: StreamKey,
        subscription: Iterable[str],
        limit: int,
        upto: StreamKey | None = None,
    ) -> list[Entry]:
        """Matching entries after ``after`` (up to ``upto``), oldest first, at most
        ``limit``, within the scan budget (see :meth:`history_after`)."""
        return (await self.history_after(after, subscription, limit, upto)).entries

    async def scan_latest(
        self, subscription: Iterable[str], limit: int, before: StreamKey | None = None
    ) -> list[Entry]:
        """The newest ``limit`` matching entries (older than ``before``), newest first,
        within the scan budget (a backfill shows what the budget found)."""
        return (await self.history_before(subscription, limit, before)).entries

    async def ping(self) -> bool:
        """True when Redis answers."""
        return bool(await self.redis.ping())


async def _first(pages: AsyncIterator[tuple[list[Entry], StreamKey | None]], limit: int) -> Scan:
    """The first ``limit`` entries of a paged read (ANSWER_BYTES of them at most,
    give or take the last), reading no further page than needed."""
    found: list[Entry] = []
    size = 0
    going_on: StreamKey | None = None
    async for page, going_on in pages:
        for i, entry in enumerate(page):
            found.append(entry)
            size += len(entry.json)
            if len(found) >= limit or size >= ANSWER_BYTES:
                more = i + 1 < len(page) or going_on is not None
                return Scan(found, entry.key if more else None)
    # Out of budget (going_on set) or at the stream's end (None).
    return Scan(found, going_on)


def _entries(rows: Any) -> list[Entry]:
    return [Entry.from_fields(eid, fields) for eid, fields in rows]
