"""The whole wire against a plain-Python model of it: a stateful property test.

Hypothesis drives random sequences of publishes, new versions, withdrawals,
embargoes (accept, cancel, release), idempotent retries (same body, other
body), corrections (of existing and missing stories), translations (of
existing, missing, pending and withdrawn stories), batches (a JSON array
mixing all of these with invalid items and per-item keys, maybe sent twice)
and hostile guids through the real HTTP API of one in-process wire
(publisher and gateway) on a real Redis. After every step the editor and two
partners with different grants read history (newest first, and paged
forward), stories (with their translations) and items by id, and each has a
live WebSocket whose messages must be exactly what the model says it should
have received.

Every publish, single or one slot of a batch, is answered as
``Model.outcome`` says (in the order the wire checks: input, key, withdrawn
story, correction of nothing, translation of a withdrawn story): a new
version, a pending embargo, a repeat of the key's first answer, or a refusal.

The model (``Model`` and the functions under "What each reader must see") is
the specification; it is meant to be read. Where the required behaviour
leaves a detail open (a status code, the exact JSON of a stub), the model
compares only robust facts and the choice sits in one named place.

Design of the harness: hypothesis state machines are synchronous, so one
background thread runs an asyncio loop that holds the server (started once
per test run), an HTTP session and the WebSocket readers; the machine sends
it coroutines with ``run_coroutine_threadsafe``. Redis is flushed at the
start of each example, not each step.

Embargo release: an embargo is posted a day ahead, and the ``release`` rule
moves its score in the schedule (``keys.EMBARGOES``) to the distant past, as
if a day had passed. The server's own releaser task (polling every 10 ms)
then publishes it through the production code path; the rule waits for the
schedule to drop it (a condition, with a generous deadline that only a dead
releaser would reach). That is the one place the test writes to Redis
directly: time is the one thing the API cannot move.

``make test`` runs a bounded, derandomized set of examples;
``WIRE_MODEL_EXAMPLES=500`` (``make fault`` sets it) runs many random ones.
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar, TypeVar
from urllib.parse import quote

import aiohttp
import orjson
import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from yarl import URL

from tests.conftest import Server, server_factory
from tests.support import EDITOR_TOKEN, RedisServer
from wire.core.entry import Entry
from wire.storage import keys
from wire.storage.store import Store
from wire.web.appkeys import STORE

T = TypeVar("T")
#: A batch element: the item (or not an object) and its idempotency key.
Slot = tuple[Any, str | None]

EXAMPLES = int(os.environ.get("WIRE_MODEL_EXAMPLES", "0") or 0)
MODEL_SETTINGS = settings(
    max_examples=EXAMPLES or 25,
    stateful_step_count=30,
    deadline=None,
    database=None,  # CI runs with -p no:cacheprovider; nothing is remembered
    derandomize=not EXAMPLES,  # the bounded run is the same run every time
    suppress_health_check=list(HealthCheck),
)
WAIT = 10.0  # seconds: the deadline for conditions that only a bug keeps false

# ---------------------------------------------------------------------------
# Choices where the required behaviour leaves a detail open: one place each.

#: An idempotent repeat of an embargoed publish answers the first pending item.
EMBARGO_RETRY_STATUSES = frozenset({200, 202})
#: Cancelling a pending embargo of a story withdrawn since: either is fine.
CANCEL_AFTER_WITHDRAW_STATUSES = frozenset({200, 404})


def facts(item: dict[str, Any]) -> dict[str, Any]:
    """The robust facts of an item as the wire shows it (compared with the model).

    Tags are compared as a set (sorted); the content (title, mark, language,
    translation_of) only where it is shown.
    """
    shown = {
        "id": item.get("id"),
        "guid": item.get("guid"),
        "version": item.get("version"),
        "pubstatus": item.get("pubstatus"),
        "tags": sorted(item.get("tags") or []),
    }
    if item.get("pubstatus") in ("usable", "withheld"):
        for name in ("title", "mark", "language", "translation_of"):
            shown[name] = item.get(name)
    return shown


# ---------------------------------------------------------------------------
# The model: what the wire holds.

DEFAULT_LANGUAGE = "en"  # the server's WIRE_DEFAULT_LANGUAGE
CORRECTED, UPDATED = "Corrected", "Updated"


@dataclass(frozen=True)
class Content:
    """What an editor's item says that the model follows.

    ``mark`` is as sent, with a correction's default: ``Corrected``.
    """

    title: str
    tags: tuple[str, ...]
    mark: str | None = None
    language: str = DEFAULT_LANGUAGE
    translation_of: str | None = None

    @classmethod
    def of(cls, body: dict[str, Any]) -> Content:
        return cls(
            body["title"],
            tuple(body["tags"]),
            CORRECTED if body.get("correction") else None,
            body.get("language", DEFAULT_LANGUAGE),
            body.get("translation_of"),
        )


@dataclass
class Version:
    """One published version of a story; ``mark`` as stored (``Updated`` by default
    from version 2 on)."""

    id: str
    guid: str
    version: int
    content: Content
    mark: str | None

    @property
    def tags(self) -> tuple[str, ...]:
        return self.content.tags


@dataclass
class Withdrawal:
    """A story's kill notice: tags are the union of its versions' tags."""

    id: str
    guid: str
    version: int
    tags: tuple[str, ...]


@dataclass
class Pending:
    """An accepted embargoed item, not yet released."""

    guid: str
    content: Content
    body: dict[str, Any]

    @property
    def tags(self) -> tuple[str, ...]:
        return self.content.tags


@dataclass(frozen=True)
class Repeat:
    """An idempotent repeat: the first answer under the key, nothing stored."""

    answer: Version | Pending


@dataclass(frozen=True)
class Refusal:
    """An error answer; ``field`` is compared only when the model names one."""

    status: int
    code: str
    field: str | None = None


@dataclass
class IdemRecord:
    """What an Idempotency-Key was first used for: the body and its answer."""

    body: dict[str, Any]
    answer: Version | Pending


ModelEntry = Version | Withdrawal
#: What one publish (single, or one slot of a batch) answers.
Outcome = Version | Pending | Repeat | Refusal

TAG = re.compile(r"[a-z]+(/[a-z]+)*")  # enough for the tags the test sends


def input_error(body: Any) -> Refusal | None:
    """The 400 of an item the validator refuses, for the few rules the test breaks."""
    if not isinstance(body, dict):
        return Refusal(400, "invalid_field")
    if not str(body.get("title") or "").strip():
        return Refusal(400, "invalid_field", "title")
    if not all(TAG.fullmatch(t) for t in body["tags"]):
        return Refusal(400, "invalid_tag", "tags")
    if body.get("correction") not in (None, True, False):
        return Refusal(400, "invalid_field", "correction")
    if "translation_of" in body and body["translation_of"] == body.get("guid"):
        return Refusal(400, "invalid_field", "translation_of")
    return None


@dataclass
class Model:
    """The wire as a list of entries in stream order plus pending embargoes, keys
    and translation links (original guid: the guids that translate it)."""

    stream: list[ModelEntry] = field(default_factory=list)
    withdrawn: dict[str, Withdrawal] = field(default_factory=dict)
    pending: dict[str, Pending] = field(default_factory=dict)
    idem: dict[str, IdemRecord] = field(default_factory=dict)
    links: dict[str, set[str]] = field(default_factory=dict)

    def story(self, guid: str) -> list[ModelEntry]:
        return [e for e in self.stream if e.guid == guid]

    def guids(self) -> list[str]:
        return sorted({e.guid for e in self.stream})

    def outcome(self, body: Any, key: str | None) -> Outcome:
        """What publishing ``body`` under ``key`` answers, checked in the wire's order:
        input, key, withdrawn story, correction of nothing, translation of a kill."""
        refused = input_error(body)
        if refused is not None:
            return refused
        if key is not None and key in self.idem:
            record = self.idem[key]
            if record.body != body:
                return Refusal(422, "idempotency_key_reused")
            return Repeat(record.answer)
        guid, content = body["guid"], Content.of(body)
        if guid in self.withdrawn:
            return Refusal(409, "story_withdrawn")
        if body.get("correction") and not self.story(guid):
            return Refusal(400, "invalid_field", "correction")
        if content.translation_of in self.withdrawn:
            return Refusal(409, "story_withdrawn", "translation_of")
        if "embargo_until" in body:
            return Pending(guid, content, body)
        return self.next_version(guid, content)

    def commit(self, outcome: Outcome, body: Any, key: str | None) -> None:
        """Record a stored version or an accepted embargo (and what its key answers)."""
        if isinstance(outcome, Version):
            self.append(outcome)
        elif isinstance(outcome, Pending):
            self.pending[outcome.guid] = outcome
        else:
            return
        if key is not None:
            self.idem[key] = IdemRecord(body, outcome)

    def append(self, version: Version) -> None:
        self.stream.append(version)
        if version.content.translation_of is not None:
            self.links.setdefault(version.content.translation_of, set()).add(version.guid)

    def next_version(self, guid: str, content: Content) -> Version:
        """The version a publish of ``guid`` stores now (its id is the server's)."""
        number = len(self.story(guid)) + 1
        mark = content.mark or (UPDATED if number > 1 else None)
        return Version("?", guid, number, content, mark)

    def doomed(self, pending: Pending) -> bool:
        """A pending item its release will drop: its story, or its original, was killed."""
        return pending.guid in self.withdrawn or pending.content.translation_of in self.withdrawn

    def withdrawal(self, guid: str) -> Withdrawal:
        story = self.story(guid)
        union = sorted({t for e in story for t in e.tags})
        return Withdrawal("?", guid, len(story) + 1, tuple(union))


# ---------------------------------------------------------------------------
# What each reader must see.


@dataclass(frozen=True)
class Reader:
    """A token, its grant (None: everything) and its live subscription."""

    name: str
    token: str
    grant: frozenset[str] | None
    subscription: str

    def covers(self, tag: str) -> bool:
        return self.grant is None or any(tag == g or tag.startswith(g + "/") for g in self.grant)

    def sees(self, tags: tuple[str, ...]) -> bool:
        return any(self.covers(t) for t in tags)

    def receives(self, tags: tuple[str, ...]) -> bool:
        s = self.subscription
        return s == "*" or any(t == s or t.startswith(s + "/") for t in tags)

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


EDITOR = Reader("editor", EDITOR_TOKEN, None, "*")
WORLD = Reader("partner-world", "partner-world-token", frozenset({"world"}), "world")
SPORT = Reader("partner-sport", "partner-sport-token", frozenset({"sport"}), "sport")
READERS = (EDITOR, WORLD, SPORT)
ENTITLEMENTS = "".join(
    f'[[token]]\ntoken = "{r.token}"\nname = "{r.name}"\ntags = {sorted(r.grant)!r}\n'.replace(
        "'", '"'
    )
    for r in READERS
    if r.grant is not None
)


def view(reader: Reader, entry: ModelEntry, *, stub: bool = False) -> dict[str, Any]:
    """The facts ``reader`` is shown of ``entry``.

    A withdrawal's tags are cut to the reader's grant; a stub (a version of a
    withdrawn story, in a story read) keeps its own tags but no content.
    """
    if isinstance(entry, Withdrawal):
        tags = sorted(t for t in entry.tags if reader.covers(t))
        return {**_ids(entry), "pubstatus": "canceled", "tags": tags}
    if stub:
        return {**_ids(entry), "pubstatus": "canceled", "tags": sorted(entry.tags)}
    return {**_ids(entry), "pubstatus": "usable", **_content(entry.content, entry.mark)}


def _ids(entry: ModelEntry) -> dict[str, Any]:
    return {"id": entry.id, "guid": entry.guid, "version": entry.version}


def _content(content: Content, mark: str | None) -> dict[str, Any]:
    return {
        "tags": sorted(content.tags),
        "title": content.title,
        "mark": mark,
        "language": content.language,
        "translation_of": content.translation_of,
    }


def pending_view(p: Pending) -> dict[str, Any]:
    """A pending item: its mark as sent (no ``Updated`` before its version is known)."""
    return {
        "id": None,
        "guid": p.guid,
        "version": None,
        "pubstatus": "withheld",
        **_content(p.content, p.content.mark),
    }


def history(model: Model, reader: Reader) -> list[dict[str, Any]]:
    """``GET /v1/items`` oldest first: withdrawn versions gone, their kill kept."""
    return [
        view(reader, e)
        for e in model.stream
        if reader.sees(e.tags) and not (isinstance(e, Version) and e.guid in model.withdrawn)
    ]


def live(model: Model, reader: Reader) -> list[dict[str, Any]]:
    """What the reader's live WebSocket has received, in order."""
    return [view(reader, e) for e in model.stream if reader.receives(e.tags)]


def item_answer(model: Model, reader: Reader, entry: ModelEntry) -> tuple[int, Any]:
    """``GET /v1/items/<id>``: outside the grant looks exactly like missing."""
    if not reader.sees(entry.tags):
        return 404, None
    if isinstance(entry, Version) and entry.guid in model.withdrawn:
        return 410, None
    return 200, view(reader, entry)


def story_answer(model: Model, reader: Reader, guid: str) -> tuple[int, Any]:
    """``GET /v1/stories/<guid>``: only the versions inside the grant; none is 404.

    ``current`` is the newest of them; its ``translation_of`` (none once
    withdrawn) is the story's. ``translations`` as :func:`translations` says.
    """
    seen = [e for e in model.story(guid) if reader.sees(e.tags)]
    if not seen:
        return 404, None
    stub = guid in model.withdrawn
    versions = [view(reader, e, stub=stub) for e in seen]
    story = {
        "guid": guid,
        "current": versions[-1],
        "versions": versions,
        "translations": translations(model, reader, guid),
    }
    current = seen[-1]
    if isinstance(current, Version) and current.content.translation_of is not None:
        story["translation_of"] = current.content.translation_of
    return 200, story


def translations(model: Model, reader: Reader, guid: str) -> list[dict[str, Any]]:
    """The stories linked as translations of ``guid`` (by any of their versions,
    a forward link included), by guid: not withdrawn ones, and for each its
    newest version within the reader's grant (none: not mentioned), as long as
    that version still names ``guid`` as its original."""
    listed = []
    for other in sorted(model.links.get(guid, ())):
        seen = [e for e in model.story(other) if isinstance(e, Version) and reader.sees(e.tags)]
        if other not in model.withdrawn and seen and seen[-1].content.translation_of == guid:
            newest = seen[-1]
            listed.append(
                {"guid": other, "language": newest.content.language, "version": newest.version}
            )
    return listed


# ---------------------------------------------------------------------------
# Strategies.

GUID = re.compile(r"[A-Za-z0-9._~:@+=-]{1,200}")  # what wire/items.py accepts
#: Guids built to collide with naive Redis key schemes (prefix + guid + suffix).
TRICKY_GUIDS = [
    "a",
    "a:ids",
    "a:tags",
    "kc2",
    "kc2:ids",
    "kc2:tags",
    "kc2:tags:ids",
    "a:",
    ":",
    "due",
    "item:a",
    "urn:wire:0123456789abcdef01234567",
    "x~y@z+1=2.-_",
    "g" * 200,
    "a:" + "b" * 198,
]
TAGS = ["world", "world/europe", "sport", "business"]
TITLES = ["Quake hits the coast", "Новости дня", "日本の選挙", "हिन्दी समाचार", "Rates cut"]

guids = st.one_of(st.sampled_from(TRICKY_GUIDS), st.from_regex(GUID, fullmatch=True))
bad_guids = st.one_of(
    st.sampled_from(["{a}", "kc2{x}", "a*", "*", "a b", " ", "ça", "日本", "g" * 201, "a}{b"]),
    st.text(min_size=1, max_size=20).filter(
        lambda s: not GUID.fullmatch(s) and not set(s) & set("./")
    ),
)
tag_lists = st.lists(st.sampled_from(TAGS), min_size=1, max_size=3, unique=True).map(tuple)
titles = st.sampled_from(TITLES)
languages = st.sampled_from(["fr", "de", "ja", "pt-BR", DEFAULT_LANGUAGE])
#: Ways to spoil an item, each refused as ``input_error`` says.
SPOILERS: list[dict[str, Any]] = [
    {"title": "   "},
    {"tags": ["world", "a.b"]},
    {"correction": "yes"},
    {"translation_of": None},  # the item's own guid: filled in when spoiling
]
#: Not an Idempotency-Key (a space): a batch element's own 400.
BAD_KEY = "not a key"


# ---------------------------------------------------------------------------
# The harness: one server, driven from a background event loop.


class Feed:
    """A live WebSocket whose messages a background task collects."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.messages: list[dict[str, Any]] = []
        self.changed = asyncio.Event()
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                self.messages.append(orjson.loads(msg.data))
            self.changed.set()
        self.messages.append({"type": "closed", "code": self.ws.close_code})
        self.changed.set()

    async def wait_for(self, count: int) -> list[dict[str, Any]]:
        """The messages so far, once there are ``count`` (or the deadline passed)."""
        deadline = time.monotonic() + WAIT
        while len(self.messages) < count and time.monotonic() < deadline:
            self.changed.clear()
            try:
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    await self.changed.wait()
            except TimeoutError:
                break
        return list(self.messages)

    async def close(self) -> None:
        await self.ws.close()
        await asyncio.gather(self.task, return_exceptions=True)


class Harness:
    """A wire (publisher and gateway) on a free port, served from its own thread."""

    def __init__(self, redis: RedisServer, tmp: Path) -> None:
        self.redis_server = redis
        self.redis = redis.client()
        self.entitlements = tmp / "entitlements.toml"
        self.entitlements.write_text(ENTITLEMENTS)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="model-wire", daemon=True)
        self.last_ms = 0  # the newest stream id's milliseconds of the previous example
        #: Set when an example failed: it may have left the server broken (a
        #: background task dead), so the next example gets a new one and
        #: examples stay independent (shrinking needs them to be).
        self.broken = False

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> Harness:
        self.thread.start()
        self.run(self._start())
        return self

    async def _start(self) -> None:
        self.http = aiohttp.ClientSession()
        await self._serve()

    async def _serve(self) -> None:
        self._factory = server_factory(self.redis_server.url)
        make = await self._factory.__aenter__()
        self.server: Server = await make(entitlements=self.entitlements, embargo_poll=0.01)
        self.store: Store = self.server.app[STORE]

    async def _restart(self) -> None:
        await self._factory.__aexit__(None, None, None)
        await self._serve()

    def stop(self) -> None:
        self.run(self._stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
        self.redis.close()

    async def _stop(self) -> None:
        await self.http.close()
        await self._factory.__aexit__(None, None, None)

    def fresh(self) -> None:
        """An empty Redis whose next stream id is above every id the gateway saw."""
        if self.broken:
            self.run(self._restart())
            self.broken = False
        self.redis.flushall()
        # After FLUSHALL the stream's ids restart from the clock; the gateway
        # reads after the last id it delivered, so wait out that millisecond.
        while int(time.time() * 1000) <= self.last_ms:
            time.sleep(0.001)

    async def request(
        self, method: str, path: str, reader: Reader | None = EDITOR, body: Any = None, **hdrs: str
    ) -> tuple[int, Any]:
        """One request; never a 5xx. ``path`` is already percent-encoded."""
        headers = dict(reader.auth if reader else {}, **hdrs)
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = orjson.dumps(body)
        url = URL(self.server.base + path, encoded=True)
        async with self.http.request(method, url, data=data, headers=headers) as resp:
            answer = await resp.json(content_type=None)
        assert resp.status < 500, f"{method} {path} as {reader and reader.name}: {answer}"
        return resp.status, answer

    async def ndjson(self, elements: list[Any]) -> tuple[int, list[Any]]:
        """A batch as ``application/x-ndjson`` (a blank line among them), as the
        editor: the status and the result lines."""
        lines = [orjson.dumps(e) for e in elements]
        data = b"\n".join([*lines[:1], b"", *lines[1:]]) + b"\n"
        headers = dict(EDITOR.auth, **{"Content-Type": "application/x-ndjson"})
        async with self.http.post(self.server.base + "/v1/items", data=data, headers=headers) as r:
            text = await r.read()
        assert r.status < 500, text
        return r.status, [orjson.loads(line) for line in text.splitlines() if line.strip()]

    async def feed(self, reader: Reader) -> Feed:
        ws = await self.http.ws_connect(
            f"{self.server.ws}?tags={reader.subscription}", headers=reader.auth
        )
        feed = Feed(ws)
        first = await feed.wait_for(1)
        assert first[:1] and first[0]["type"] == "subscribed", f"{reader.name}: {first}"
        feed.messages.clear()
        return feed

    async def released(self, guid: str) -> None:
        """Wait until the releaser took ``guid`` off the schedule; fail at once if
        ``/readyz`` reports a background task down, else after the deadline."""
        deadline = time.monotonic() + WAIT
        while await self.store.redis.zscore(keys.EMBARGOES, keys.embargo(guid)) is not None:
            status, ready = await self.request("GET", "/readyz", None)
            assert status == 200, f"not ready while an embargo is due: {ready}"
            assert time.monotonic() < deadline, "the releaser did not release it: is it alive?"
            await asyncio.sleep(0.005)

    async def entries(self) -> list[Entry]:
        """Everything in the stream, through the store's own read."""
        return await self.store.range_after((0, 0), None, count=100_000)


def path(*parts: str) -> str:
    return "/" + "/".join(quote(p, safe="") for p in parts)


# ---------------------------------------------------------------------------
# The state machine.


class WireMachine(RuleBasedStateMachine):
    """Random editor actions; after each, every reader's view equals the model's."""

    harness: ClassVar[Harness]

    def __init__(self) -> None:
        super().__init__()
        self.h = self.harness
        self.model = Model()
        self.counter = 0
        self.touched: set[str] = set()
        self.feeds: dict[str, Feed] = {}
        self.ok = True

    @initialize()
    def connect(self) -> None:
        """A fresh Redis and a live subscriber per reader, for this example."""
        self.h.fresh()
        for reader in READERS:
            self.feeds[reader.name] = self.h.run(self.h.feed(reader))

    def teardown(self) -> None:
        try:
            if self.ok and self.feeds:
                self.final_check()
        finally:
            for feed in self.feeds.values():
                self.h.run(feed.close())
            self.h.broken |= not self.ok
            last = self.model.stream[-1].id if self.model.stream else "0-0"
            self.h.last_ms = max(self.h.last_ms, int(last.split("-")[0]))

    def next(self) -> int:
        self.counter += 1
        return self.counter

    def call(self, method: str, url: str, body: Any = None, **hdrs: str) -> tuple[int, Any]:
        """One request as the editor."""
        self.ok = False  # until this step's checks pass
        return self.h.run(self.h.request(method, url, EDITOR, body, **hdrs))

    def body(
        self, guid: str, title: str, tags: tuple[str, ...], embargo: bool, **extra: Any
    ) -> dict[str, Any]:
        """An item; ``extra`` adds fields (``translation_of``, ``language``, ``correction``)."""
        body: dict[str, Any] = {
            "title": f"{title} #{self.next()}",
            "tags": list(tags),
            "guid": guid,
            **extra,
        }
        if embargo:  # a day ahead: only the release rule makes it due
            moment = datetime.now(UTC) + timedelta(days=1, seconds=self.counter)
            body["embargo_until"] = moment.isoformat(timespec="milliseconds")
        return body

    def key(self, keyed: bool) -> str | None:
        return f"k{self.next()}" if keyed else None

    # --- editor actions --------------------------------------------------------

    @rule(guid=guids, title=titles, tags=tag_lists, keyed=st.booleans())
    def publish(self, guid: str, title: str, tags: tuple[str, ...], keyed: bool) -> None:
        self.send(self.body(guid, title, tags, embargo=False), self.key(keyed))

    @precondition(lambda self: self.model.stream)
    @rule(data=st.data(), title=titles, tags=tag_lists)
    def republish(self, data: st.DataObject, title: str, tags: tuple[str, ...]) -> None:
        guid = data.draw(st.sampled_from(self.model.guids()), label="guid")
        self.send(self.body(guid, title, tags, embargo=False), None)

    @rule(data=st.data(), fresh=guids, title=titles, tags=tag_lists, keyed=st.booleans())
    def embargo(
        self, data: st.DataObject, fresh: str, title: str, tags: tuple[str, ...], keyed: bool
    ) -> None:
        guid = data.draw(st.sampled_from([fresh, *self.known()]), label="guid")
        self.send(self.body(guid, title, tags, embargo=True), self.key(keyed))

    @rule(
        data=st.data(),
        fresh=guids,
        other=guids,
        title=titles,
        tags=tag_lists,
        language=languages,
        embargo=st.booleans(),
    )
    def translate(
        self,
        data: st.DataObject,
        fresh: str,
        other: str,
        title: str,
        tags: tuple[str, ...],
        language: str,
        embargo: bool,
    ) -> None:
        """A translation of a missing (forward link), existing, pending or withdrawn story."""
        original = data.draw(st.sampled_from([other, *self.known()]), label="original")
        guid = data.draw(st.sampled_from([fresh, *self.model.guids()]), label="guid")
        extra = {"translation_of": original, "language": language}
        self.send(self.body(guid, title, tags, embargo, **extra), None)

    @rule(data=st.data(), other=guids, title=titles, tags=tag_lists, embargo=st.booleans())
    def correct(
        self, data: st.DataObject, other: str, title: str, tags: tuple[str, ...], embargo: bool
    ) -> None:
        """A correction of an existing story, or of one that is missing or only pending (400)."""
        guid = data.draw(st.sampled_from([other, *self.known()]), label="guid")
        self.send(self.body(guid, title, tags, embargo, correction=True), None)

    def known(self) -> list[str]:
        """Every guid the wire knows: published (withdrawn too) or pending."""
        return sorted({*self.model.guids(), *self.model.pending})

    def send(self, body: dict[str, Any], key: str | None) -> None:
        """POST /v1/items and check the answer against the model; then update it."""
        hdrs = {"Idempotency-Key": key} if key else {}
        status, answer = self.call("POST", "/v1/items", body, **hdrs)
        self.settle(body, key, status, answer)

    def settle(self, body: Any, key: str | None, status: int, answer: dict[str, Any]) -> None:
        """One publish's answer (single, or a batch slot) against the model; then record it."""
        want = self.model.outcome(body, key)
        event(f"publish: {_label(want, body)}")  # see --hypothesis-show-statistics
        got: dict[str, Any] = answer.get("item") or {}
        if isinstance(want, Refusal):
            error = answer.get("error") or {}
            assert (status, error.get("code")) == (want.status, want.code), (status, answer, body)
            if want.field is not None:
                assert error.get("field") == want.field, (answer, body)
        elif isinstance(want, Repeat) and isinstance(want.answer, Version):
            assert status == 200, (status, answer)
            assert facts(got) == view(EDITOR, want.answer)
        elif isinstance(want, Repeat) and isinstance(want.answer, Pending):
            assert status in EMBARGO_RETRY_STATUSES, (status, answer)
            assert facts(got) == pending_view(want.answer)
            assert got["embargo_until"] is not None
        elif isinstance(want, Pending):
            assert status == 202, (status, answer)
            assert facts(got) == pending_view(want)
        else:
            assert isinstance(want, Version) and status == 201, (status, answer)
            want.id = got["id"]
            assert facts(got) == view(EDITOR, want)
        self.model.commit(want, body, key)
        if isinstance(body, dict):
            self.touched.add(body["guid"])

    @rule(data=st.data(), size=st.integers(2, 5), again=st.booleans(), ndjson=st.booleans())
    def batch(self, data: st.DataObject, size: int, again: bool, ndjson: bool) -> None:
        """A batch (JSON array or ndjson) mixing every kind of item, each answered in
        its slot; maybe the very same batch again (keyed items answer their first)."""
        slots: list[Slot] = []
        for _ in range(size):
            slots.append(self.slot(data, slots))
        self.send_batch(slots, ndjson)
        if again:
            self.send_batch(slots, ndjson)

    def slot(self, data: st.DataObject, before: list[Slot]) -> Slot:
        """One batch element (an item and its key), of a kind hypothesis picks."""
        earlier = [b["guid"] for b, _ in before if isinstance(b, dict)]
        known = sorted({*self.known(), *earlier})
        kinds = ["new", "invalid", "embargo", "translation", "correction", "not an object"]
        kinds += ["version", "bad key"] if known else []
        kinds += ["withdrawn"] if self.model.withdrawn else []
        used = sorted({k for _, k in before if k not in (None, BAD_KEY)})
        kinds += ["repeat"] if before else []
        kinds += ["other item, same key"] if used else []
        kinds += ["earlier key"] if self.model.idem else []
        kind = data.draw(st.sampled_from(kinds), label="kind")
        if kind == "earlier key":  # one namespace with the header: the first answer
            first = data.draw(st.sampled_from(sorted(self.model.idem)), label="earlier key")
            return self.model.idem[first].body, first
        if kind == "repeat":  # an earlier element again, same key: its answer again
            repeat: Slot = data.draw(st.sampled_from(before), label="repeat")
            return repeat
        if kind == "not an object":
            return "not an item", None
        fresh = data.draw(guids, label="fresh")
        title = data.draw(titles, label="title")
        tags = data.draw(tag_lists, label="tags")
        key = self.key(data.draw(st.booleans(), label="keyed"))
        pick = {
            "new": [fresh],
            "version": known,
            "withdrawn": sorted(self.model.withdrawn),
            "embargo": [fresh, *known],
            "translation": [fresh, *known],
            "correction": [fresh, *known],
        }.get(kind, [fresh, *known])
        guid = data.draw(st.sampled_from(pick), label="guid")
        extra: dict[str, Any] = {}
        if kind == "translation":
            original = data.draw(st.sampled_from([fresh[:199] + "o", *known]), label="original")
            extra = {"translation_of": original, "language": data.draw(languages)}
        elif kind == "correction":
            extra = {"correction": True}
        embargo = kind == "embargo" or (
            kind in ("translation", "correction") and data.draw(st.booleans(), label="embargo")
        )
        body = self.body(guid, title, tags, embargo, **extra)
        if kind == "invalid":
            spoiler = data.draw(st.sampled_from(SPOILERS), label="spoiler")
            body.update({k: guid if v is None else v for k, v in spoiler.items()})
        if kind == "bad key":
            key = BAD_KEY
        if kind == "other item, same key":  # 422 if that item was stored, else new
            key = data.draw(st.sampled_from(used), label="used key")
        return body, key

    def send_batch(self, slots: list[Slot], ndjson: bool) -> None:
        elements = [
            {**body, "idempotency_key": key} if key is not None else body for body, key in slots
        ]
        if ndjson:
            self.ok = False
            status, results = self.h.run(self.h.ndjson(elements))
        else:
            status, answer = self.call("POST", "/v1/items", elements)
            results = answer.get("results")
        assert status == 200, (status, results)
        assert len(results) == len(slots), results
        for (body, key), result in zip(slots, results, strict=True):
            if key == BAD_KEY:  # refused before the item is looked at
                error = result.get("error") or {}
                shown = (result["status"], error.get("code"), error.get("field"))
                assert shown == (400, "invalid_field", "idempotency_key"), result
                continue
            self.settle(body, key, result["status"], result)
        stamps = {r["item"]["published_at"] for r in results if r["status"] == 201}
        assert len(stamps) <= 1, f"one published_at per batch: {stamps}"

    @precondition(lambda self: self.model.idem)
    @rule(data=st.data())
    def retry_same_body(self, data: st.DataObject) -> None:
        """The same key and body again: the first answer, nothing new stored (an
        embargo's first pending item even if since replaced, cancelled or released)."""
        key = data.draw(st.sampled_from(sorted(self.model.idem)), label="key")
        self.send(self.model.idem[key].body, key)

    @precondition(lambda self: self.model.idem)
    @rule(data=st.data())
    def retry_other_body(self, data: st.DataObject) -> None:
        """The same key with another body: 422, nothing stored or replaced."""
        key = data.draw(st.sampled_from(sorted(self.model.idem)), label="key")
        body = {**self.model.idem[key].body, "title": f"Changed #{self.next()}"}
        status, answer = self.call("POST", "/v1/items", body, **{"Idempotency-Key": key})
        assert (status, _code(answer)) == (422, "idempotency_key_reused"), (status, answer)

    @rule(data=st.data(), other=guids)
    def withdraw(self, data: st.DataObject, other: str) -> None:
        guid = data.draw(st.sampled_from([other, *self.model.guids()]), label="guid")
        self.touched.add(guid)
        status, answer = self.call(
            "POST", path("v1", "stories", guid, "withdraw"), {"reason": "Legal"}
        )
        if not self.model.story(guid):
            assert (status, _code(answer)) == (404, "not_found"), (status, answer)
            return
        assert status == 200, (status, answer)
        if guid in self.model.withdrawn:  # a repeat: the same withdrawal
            assert facts(answer["item"]) == view(EDITOR, self.model.withdrawn[guid])
            return
        kill = self.model.withdrawal(guid)
        kill.id = answer["item"]["id"]
        assert facts(answer["item"]) == view(EDITOR, kill)
        self.model.stream.append(kill)
        self.model.withdrawn[guid] = kill

    @rule(data=st.data(), other=guids)
    def cancel_embargo(self, data: st.DataObject, other: str) -> None:
        guid = data.draw(st.sampled_from([other, *sorted(self.model.pending)]), label="guid")
        status, answer = self.call("DELETE", path("v1", "embargoes", guid))
        pending = self.model.pending.pop(guid, None)
        if pending is not None and self.model.doomed(pending):
            assert status in CANCEL_AFTER_WITHDRAW_STATUSES, (status, answer)
        elif pending is not None:
            assert (status, answer) == (200, {"cancelled": guid})
        else:
            assert (status, _code(answer)) == (404, "not_found"), (status, answer)

    @precondition(lambda self: self.model.pending)
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        """Make a pending item due; the server's releaser publishes it (once), or
        drops it when its story or the story it translates was withdrawn since."""
        guid = data.draw(st.sampled_from(sorted(self.model.pending)), label="guid")
        pending = self.model.pending.pop(guid)
        self.touched.add(guid)
        self.ok = False
        before = len(self.h.run(self.h.entries()))
        moved = self.h.redis.zadd(keys.EMBARGOES, {keys.embargo(guid): 1}, xx=True, ch=True)
        assert moved or self.model.doomed(pending), f"{guid!r} is not in the schedule"
        self.h.run(self.h.released(guid))
        new = self.h.run(self.h.entries())[before:]
        event(f"release: {'dropped' if self.model.doomed(pending) else 'published'}")
        if self.model.doomed(pending):
            assert new == [], f"released, but its story or original was withdrawn: {new}"
            return
        version = self.model.next_version(guid, pending.content)
        assert len(new) == 1, f"one release, got {new}"
        version.id = new[0].id
        assert facts(orjson.loads(new[0].json)) == view(EDITOR, version)
        self.model.append(version)

    @rule(guid=bad_guids, tags=tag_lists)
    def hostile_guid(self, guid: str, tags: tuple[str, ...]) -> None:
        """A guid the validator refuses: 400 on publish, 404 everywhere else."""
        status, answer = self.call(
            "POST", "/v1/items", {"title": "x", "tags": list(tags), "guid": guid}
        )
        assert (status, answer["error"].get("field")) == (400, "guid"), (status, answer)
        for method, url, body in [
            ("GET", path("v1", "stories", guid), None),
            ("POST", path("v1", "stories", guid, "withdraw"), {"reason": "x"}),
            ("DELETE", path("v1", "embargoes", guid), None),
        ]:
            status, answer = self.call(method, url, body)
            assert (status, _code(answer)) == (404, "not_found"), (method, status, answer)

    # --- what every reader sees ------------------------------------------------

    @invariant()
    def reads_agree_with_the_model(self) -> None:
        if not self.feeds:
            return  # before the example's Redis is fresh
        self.ok = False
        # A story read of an original lists its translations: it changes with them.
        self.touched |= {g for g, linked in self.model.links.items() if linked & self.touched}
        for reader in READERS:
            self.check_history(reader)
            for guid in sorted(self.touched):
                self.check_story(reader, guid)
        self.check_stream()
        self.check_feeds()
        self.check_embargoes()
        self.touched.clear()
        self.ok = True

    def check_history(self, reader: Reader) -> None:
        want = history(self.model, reader)
        status, got = self.get(reader, "/v1/items?limit=500")
        assert status == 200, (reader.name, got)
        assert [facts(i) for i in got["items"]] == want[::-1], f"{reader.name}: latest"
        assert self.paged(reader) == want, f"{reader.name}: paged forward"

    def paged(self, reader: Reader, size: int = 4) -> list[dict[str, Any]]:
        """Every item after 0, page by page, following ``next`` when a page ends early."""
        got: list[dict[str, Any]] = []
        after = "0"
        for _ in range(1_000):
            status, page = self.get(reader, f"/v1/items?after={after}&limit={size}")
            assert status == 200, (reader.name, page)
            got += [facts(i) for i in page["items"]]
            cursor = page.get("next") or (page["items"][-1]["id"] if page["items"] else None)
            if cursor is None or (not page["items"] and cursor == after):
                return got
            after = cursor
        raise AssertionError("paging did not end")

    def check_story(self, reader: Reader, guid: str) -> None:
        want_status, want = story_answer(self.model, reader, guid)
        status, got = self.get(reader, path("v1", "stories", guid))
        assert status == want_status, (reader.name, guid, status, got)
        if want is not None:
            story = got["story"]
            shown = {
                "guid": story["guid"],
                "current": facts(story["current"]),
                "versions": [facts(v) for v in story["versions"]],
                "translations": story["translations"],
            }
            if "translation_of" in story:
                shown["translation_of"] = story["translation_of"]
            event(f"story read: {len(want['translations'])} translation(s) listed")
            assert shown == want, (reader.name, guid)
        for entry in self.model.story(guid):
            self.check_item(reader, entry)

    def check_item(self, reader: Reader, entry: ModelEntry) -> None:
        want_status, want = item_answer(self.model, reader, entry)
        status, got = self.get(reader, path("v1", "items", entry.id))
        assert status == want_status, (reader.name, entry, status, got)
        if want is not None:
            assert facts(got["item"]) == want, (reader.name, entry)

    def check_stream(self) -> None:
        """Every acknowledged item stored once, nothing else: the stream is the model."""
        stored = [
            (e.id, e.guid, orjson.loads(e.json)["version"]) for e in self.h.run(self.h.entries())
        ]
        assert stored == [(e.id, e.guid, e.version) for e in self.model.stream]

    def check_feeds(self) -> None:
        for reader in READERS:
            want = live(self.model, reader)
            got = self.h.run(self.feeds[reader.name].wait_for(len(want)))
            shown = [facts(m["item"]) if m.get("type") == "item" else m for m in got]
            assert shown == want, f"{reader.name}: live messages"

    def check_embargoes(self) -> None:
        status, got = self.get(EDITOR, "/v1/embargoes?limit=500")
        assert status == 200, got
        doomed = {g for g, p in self.model.pending.items() if self.model.doomed(p)}
        shown = {
            p["guid"]: facts(p)
            for p in got["embargoes"]
            if p["guid"] not in doomed | set(self.model.withdrawn)
        }
        want = {g: pending_view(p) for g, p in self.model.pending.items() if g not in doomed}
        assert shown == want

    def final_check(self) -> None:
        """Every story and item for every reader, and no late extra live message."""
        for reader in READERS:
            for guid in sorted({*self.model.guids(), *self.model.links}):
                self.check_story(reader, guid)
        marker = "model-end-marker"
        self.touched.add(marker)
        if marker not in self.model.withdrawn:
            self.send(self.body(marker, "End", ("world", "sport"), embargo=False), None)
        self.reads_agree_with_the_model()

    def get(self, reader: Reader, url: str) -> tuple[int, Any]:
        return self.h.run(self.h.request("GET", url, reader))


def _label(want: Outcome, body: Any) -> str:
    """What kind of publish an outcome is, for hypothesis' statistics."""
    if isinstance(want, Refusal):
        return f"refused {want.status} {want.code} {want.field or ''}".rstrip()
    kind = type(want).__name__.lower()
    if isinstance(body, dict) and body.get("translation_of"):
        kind += " translation"
    if isinstance(body, dict) and body.get("correction"):
        kind += " correction"
    return kind


def _code(answer: Any) -> str | None:
    return answer.get("error", {}).get("code") if isinstance(answer, dict) else None


@pytest.fixture(scope="module")
def harness(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Any:
    h = Harness(redis_server, tmp_path_factory.mktemp("model")).start()
    yield h
    h.stop()


@pytest.mark.timeout(120 + 10 * EXAMPLES)
def test_the_wire_behaves_like_its_model(harness: Harness) -> None:
    """Random editor sessions; every reader's every view equals the model after each step."""
    WireMachine.harness = harness
    run_state_machine_as_test(WireMachine, settings=MODEL_SETTINGS)
