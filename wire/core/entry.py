"""A stored item as read back from the stream, with its encodings cached.

Entries come only from the store (which got them from the validator), so the
gateway trusts them: it routes by ``tags`` and ``language`` without parsing
``json`` and builds each outgoing encoding at most once per process, however
many connections receive it.

A language filter is folded into the subscription keys: a connection that
wants only ``en`` and ``ru`` subscribes to ``tag@en`` and ``tag@ru`` instead
of ``tag`` (see :func:`language_keys`). An entry's :attr:`~Entry.lang_routes`
are its routes with its language appended, so one set test (:meth:`Entry.matches`)
serves live dispatch and every replay alike. Two kinds of entry have no
language of their own and pass every language filter: a withdrawal (it must
reach whoever could have received any version of the story) and an entry
written before entries carried their language (``l`` field) whose JSON names
none.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

import orjson

from wire.core import frames
from wire.core.ids import StreamKey, parse_id
from wire.core.stored import with_id
from wire.core.tags import match_keys

#: Between a subscription key and a language in a language-filtered key
#: (``world@en``): tags and language tags never contain it.
LANG_SEP = "@"

log = logging.getLogger("wire.core.entry")


def language_keys(keys: frozenset[str], languages: frozenset[str]) -> frozenset[str]:
    """The subscription keys of ``keys`` limited to ``languages`` (all of them when empty)."""
    if not languages:
        return keys
    # Interned: many connections share a filter, and the hub's index with them.
    return frozenset(sys.intern(f"{k}{LANG_SEP}{lang}") for k in keys for lang in languages)


def _stored_language(json: bytes) -> str | None:
    """The ``language`` of an item's JSON (entries written before the ``l`` field)."""
    language = orjson.loads(json).get("language")
    return language if isinstance(language, str) and language else None


class Entry:
    """One stream entry: id, routing data and the item's JSON (with ``id``)."""

    __slots__ = (
        "_lang_routes",
        "_routes",
        "_sse",
        "_views",
        "_ws",
        "guid",
        "id",
        "json",
        "key",
        "language",
        "tags",
        "urgency",
        "withdrawal",
    )

    def __init__(
        self,
        entry_id: str,
        tags: tuple[str, ...],
        urgency: int,
        guid: str,
        json: bytes,
        withdrawal: bool = False,
        language: str | None = None,
    ) -> None:
        self.id = entry_id
        self.key: StreamKey = parse_id(entry_id)
        self.tags = tags
        self.urgency = urgency
        self.guid = guid
        self.json = json
        #: A kill notice for the story ``guid`` rather than a version of it.
        self.withdrawal = withdrawal
        #: The item's normalized language; None when it passes every language
        #: filter (a withdrawal, or an old entry of unknown language).
        self.language = None if withdrawal else language
        self._lang_routes: frozenset[str] | None = None
        self._ws: bytes | None = None
        self._sse: bytes | None = None
        self._routes: frozenset[str] | None = None
        #: Narrowed copies of a withdrawal, per grant (see :meth:`narrowed`).
        self._views: dict[frozenset[str], Entry | None] | None = None

    @classmethod
    def from_fields(cls, entry_id: bytes | str, fields: dict[bytes, bytes]) -> Entry:
        """Build from a raw stream entry (as redis-py returns it).

        An entry no writer of wire makes (a field missing or unreadable: Redis
        damaged, or written by hand) becomes a :meth:`damaged` placeholder and
        is logged: raising here would stop every reader at it for good, the
        gateway's stream reader, long polls and webhooks alike, since each
        retries from just before it.
        """
        eid = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
        try:
            return cls._parse(eid, fields)
        # ValueError: UnicodeDecodeError, JSONDecodeError; AttributeError: JSON not an object.
        except (KeyError, ValueError, AttributeError) as err:
            log.error("stream entry %s is damaged (%r); skipped", eid, err)
            return cls.damaged(eid)

    @classmethod
    def damaged(cls, eid: str) -> Entry:
        """A stand-in for an unreadable entry: it keeps the stream position
        moving on and matches no subscription, filter or language."""
        entry = cls(eid, (), 0, "", b'{"id":"' + eid.encode() + b'"}', language="")
        entry._routes = entry._lang_routes = frozenset()
        return entry

    @classmethod
    def _parse(cls, eid: str, fields: dict[bytes, bytes]) -> Entry:
        stored = fields[b"j"]
        withdrawal = fields.get(b"k") == b"w"
        raw = fields.get(b"l")
        language = raw.decode() if raw else None
        if language is None and not withdrawal:
            language = _stored_language(stored)
        return cls(
            eid,
            tuple(fields[b"t"].decode().split(" ")),
            int(fields[b"u"]),
            fields[b"g"].decode(),
            with_id(eid, stored),
            withdrawal,
            language,
        )

    @property
    def routes(self) -> frozenset[str]:
        """Every subscription key this entry is delivered to (its tags' prefixes and ``*``).

        Computed once: a replay tests each entry against every resuming
        connection's subscription.
        """
        if self._routes is None:
            self._routes = match_keys(self.tags)
        return self._routes

    @property
    def lang_routes(self) -> frozenset[str]:
        """The language-filtered keys this entry is delivered to (``world@en``...).

        Empty for an entry without a language: see :meth:`matches`.
        """
        lang_routes = self._lang_routes
        if lang_routes is None:
            language = self.language
            lang_routes = self._lang_routes = (
                frozenset() if language is None
                else frozenset([f"{k}{LANG_SEP}{language}" for k in self.routes])
            )
        return lang_routes

    def matches(self, keys: frozenset[str]) -> bool:
        """True when a subscription to ``keys`` receives this entry.

        ``keys`` may be language-filtered (:func:`language_keys`); an entry
        without a language (a withdrawal) matches such a key by its tag part.
        """
        routes = self.routes
        if not routes.isdisjoint(keys):
            return True
        if self.language is None:
            return any(k.partition(LANG_SEP)[0] in routes for k in keys)
        return not self.lang_routes.isdisjoint(keys)

    def narrowed(self, grant: frozenset[str], keep: Callable[[str], bool]) -> Entry | None:
        """This entry with only the tags ``keep`` accepts (None when none is left).

        Built once per grant (``grant`` is its key), so connections sharing a
        grant share its frames too; an entry whose tags all pass is itself.
        """
        views = self._views
        if views is not None and grant in views:
            return views[grant]
        tags = tuple(t for t in self.tags if keep(t))
        view: Entry | None = self
        if not tags:
            view = None
        elif tags != self.tags:
            item = orjson.loads(self.json)
            item["tags"] = list(tags)
            view = Entry(
                self.id, tags, self.urgency, self.guid, orjson.dumps(item), self.withdrawal,
                self.language,
            )
        if views is None:
            views = self._views = {}
        views[grant] = view
        return view

    @property
    def ws_frame(self) -> bytes:
        """The complete WebSocket frame of ``{"type":"item","item":...}``."""
        if self._ws is None:
            self._ws = frames.ws_frame(frames.item_message(self.json))
        return self._ws

    @property
    def ahead_frame(self) -> bytes:
        """The frame of an urgent item sent ahead of earlier ones still queued."""
        return frames.ws_frame(b'{"type":"item","ahead":true,"item":' + self.json + b"}")

    @property
    def sse_chunk(self) -> bytes:
        """The SSE event for this item, already framed as an HTTP chunk."""
        if self._sse is None:
            self._sse = frames.http_chunk(frames.sse_event("item", self.json, self.id))
        return self._sse

    def __repr__(self) -> str:
        return f"Entry({self.id}, tags={self.tags})"

