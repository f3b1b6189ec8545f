"""A stored item as read back from the stream, with its encodings cached.

Entries come only from the store (which got them from the validator), so the
gateway trusts them: it routes by ``tags`` without parsing ``json`` and builds
each outgoing encoding at most once per process, however many connections
receive it.
"""

from __future__ import annotations

from collections.abc import Callable

import orjson

from wire.core import frames
from wire.core.ids import StreamKey, parse_id
from wire.core.stored import with_id
from wire.core.tags import match_keys


class Entry:
    """One stream entry: id, routing data and the item's JSON (with ``id``)."""

    __slots__ = (
        "_routes",
        "_sse",
        "_views",
        "_ws",
        "guid",
        "id",
        "json",
        "key",
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
    ) -> None:
        self.id = entry_id
        self.key: StreamKey = parse_id(entry_id)
        self.tags = tags
        self.urgency = urgency
        self.guid = guid
        self.json = json
        #: A kill notice for the story ``guid`` rather than a version of it.
        self.withdrawal = withdrawal
        self._ws: bytes | None = None
        self._sse: bytes | None = None
        self._routes: frozenset[str] | None = None
        #: Narrowed copies of a withdrawal, per grant (see :meth:`narrowed`).
        self._views: dict[frozenset[str], Entry | None] | None = None

    @classmethod
    def from_fields(cls, entry_id: bytes | str, fields: dict[bytes, bytes]) -> Entry:
        """Build from a raw stream entry (as redis-py returns it)."""
        eid = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
        stored = fields[b"j"]
        return cls(
            eid,
            tuple(fields[b"t"].decode().split(" ")),
            int(fields[b"u"]),
            fields[b"g"].decode(),
            with_id(eid, stored),
            fields.get(b"k") == b"w",
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

    def matches(self, keys: frozenset[str]) -> bool:
        """True when a subscription to ``keys`` receives this entry."""
        return not self.routes.isdisjoint(keys)

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
                self.id, tags, self.urgency, self.guid, orjson.dumps(item), self.withdrawal
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

