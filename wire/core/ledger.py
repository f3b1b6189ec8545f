"""The delivery ledger's pure parts: what is recorded, how it is aggregated, what is answered.

Who received which version of a story, by which channel, is recorded per
process in two steps so the live fan-out pays almost nothing:

1. On the hot path a connection with a named token (an entitlements entry's
   ``name``, or ``name:token`` in ``WIRE_SUBSCRIBER_TOKENS``) appends ONE
   :data:`Pending` tuple per batch it is written: its partner, channel, the
   entries (the list the hub writes anyway) and the time. Anonymous
   connections are only counted, per story: see :meth:`Tally.count`.
2. A background flusher (:mod:`wire.storage.ledger`) takes the pending tuples
   every ``WIRE_LEDGER_FLUSH`` seconds and :func:`aggregate` folds them into
   one record per (guid, partner, channel, version) with its first and last
   time, however many connections and batches carried it.

A record's mark is the version number, or :data:`WITHDRAWAL` for the story's
kill notice. Nothing here does I/O.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from wire.core.entry import Entry

#: The channels a delivery is recorded under.
WEBSOCKET, SSE, WEBHOOK, FEED, HISTORY = "websocket", "sse", "webhook", "feed", "history"
CHANNELS = (WEBSOCKET, SSE, WEBHOOK, FEED, HISTORY)
#: The mark of a story's withdrawal (kill notice), beside version numbers.
WITHDRAWAL = "withdrawal"

Mark = int | str
#: (partner, channel, entries written, time in ms): one per named connection per batch.
Pending = tuple[str, str, Sequence[Entry], int]
#: (guid, partner, channel, mark): what one record is about.
RecordKey = tuple[str, str, str, Mark]
#: (first ms, last ms) a record's entry went out.
Span = tuple[int, int]


def now_ms() -> int:
    """The wall clock in milliseconds (record times are compared across processes)."""
    return time.time_ns() // 1_000_000


class Tally:
    """One process's unflushed deliveries: pending tuples and anonymous counts.

    The hub, the deliverer and the read routes add to it; the flusher takes
    from it. ``cap`` bounds the pending tuples: past it ``on_full`` is called
    (the flusher then aggregates at once instead of at its next tick).
    """

    __slots__ = ("anonymous", "cap", "on_full", "pending")

    def __init__(self, cap: int = 50_000) -> None:
        self.pending: list[Pending] = []
        #: Per guid, entries routed to anonymous live connections (see :meth:`count`).
        self.anonymous: dict[str, int] = {}
        self.cap = max(1, cap)
        self.on_full: Callable[[], None] | None = None

    def add(self, partner: str, channel: str, entries: Sequence[Entry]) -> None:
        """Record that ``partner`` got ``entries`` by ``channel`` now (O(1), no copy)."""
        pending = self.pending
        pending.append((partner, channel, entries, now_ms()))
        if len(pending) >= self.cap and self.on_full is not None:
            self.on_full()

    def count(self, guid: str, connections: int) -> None:
        """``connections`` anonymous live connections were routed a version of ``guid``."""
        anonymous = self.anonymous
        anonymous[guid] = anonymous.get(guid, 0) + connections

    def take(self) -> tuple[list[Pending], dict[str, int]]:
        """Everything added so far; the tally starts empty again."""
        pending, self.pending = self.pending, []
        anonymous, self.anonymous = self.anonymous, {}
        return pending, anonymous


def mark_of(entry: Entry) -> Mark:
    """The version an entry carries, or :data:`WITHDRAWAL` for a kill notice."""
    if entry.withdrawal:
        return WITHDRAWAL
    version = orjson.loads(entry.json).get("version")
    return version if isinstance(version, int) else 0


def aggregate(pending: Iterable[Pending], into: dict[RecordKey, Span]) -> None:
    """Fold pending tuples into one span per record (first time min, last time max).

    Each entry's version is read from its JSON once per call, however many
    connections received it.
    """
    # Many connections of one partner get the same entries in one batch: each
    # distinct (partner, channel, entries) is expanded once, found by the
    # entries' identities (an Entry hashes and compares by identity, in C,
    # not per entry in Python).
    groups: dict[tuple[str, str, tuple[Entry, ...]], list[Any]] = {}
    for partner, channel, entries, at in pending:
        sig = (partner, channel, tuple(entries))
        group = groups.get(sig)
        if group is None:
            groups[sig] = [partner, channel, entries, at, at]
        elif at < group[3]:
            group[3] = at
        elif at > group[4]:
            group[4] = at
    marks: dict[str, Mark] = {}
    for partner, channel, entries, first, last in groups.values():
        for entry in entries:
            mark = marks.get(entry.id)
            if mark is None:
                mark = marks[entry.id] = mark_of(entry)
            key = (entry.guid, partner, channel, mark)
            span = into.get(key)
            if span is None:
                into[key] = (first, last)
            elif first < span[0] or last > span[1]:
                into[key] = (min(first, span[0]), max(last, span[1]))


def merge(older: dict[RecordKey, Span], newer: dict[RecordKey, Span]) -> dict[RecordKey, Span]:
    """``older`` and ``newer`` in one dict, spans widened, older records first."""
    for key, (first, last) in newer.items():
        span = older.get(key)
        older[key] = (first, last) if span is None else (min(first, span[0]), max(last, span[1]))
    return older


def add_counts(into: dict[str, int], more: dict[str, int]) -> None:
    """Add anonymous counts per guid."""
    for guid, n in more.items():
        into[guid] = into.get(guid, 0) + n


def trim(records: dict[RecordKey, Span], cap: int) -> int:
    """Drop the oldest records past ``cap``; how many were dropped."""
    over = len(records) - cap
    if over <= 0:
        return 0
    for key in list(records)[:over]:
        del records[key]
    return over


def encode_field(partner: str, channel: str, mark: Mark) -> bytes:
    """A record's hash field: the JSON array ``[partner, channel, mark]``.

    JSON is injective and escapes every control character, so no partner
    name (with ``:``, NUL, newlines or JSON inside) can make two records share
    a field or split a line of the flush script's input.
    """
    return orjson.dumps([partner, channel, mark])


def decode_field(raw: bytes) -> tuple[str, str, Mark] | None:
    """The (partner, channel, mark) of a field; None for any other field."""
    if not raw.startswith(b"["):
        return None
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if (
        isinstance(value, list) and len(value) == 3
        and isinstance(value[0], str) and isinstance(value[1], str)
        and isinstance(value[2], int | str) and not isinstance(value[2], bool)
    ):
        return value[0], value[1], value[2]
    return None


def decode_span(raw: bytes) -> Span | None:
    """A stored ``"first last"`` value (ms), or None when it is not one."""
    first, _, last = raw.partition(b" ")
    if first.isdigit() and last.isdigit():
        return int(first), int(last)
    return None


def rfc3339(ms: int) -> str:
    """``ms`` since the epoch as RFC 3339 UTC with milliseconds."""
    at = datetime.fromtimestamp(ms / 1000, UTC)
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


@dataclass(frozen=True, slots=True)
class Record:
    """One stored record: ``partner`` got ``mark`` of the story by ``channel``."""

    partner: str
    channel: str
    mark: Mark
    first: int
    last: int


def parse_records(fields: dict[bytes, bytes]) -> tuple[list[Record], int]:
    """A ledger hash as records and the anonymous count (unknown fields ignored)."""
    records: list[Record] = []
    anonymous = 0
    for raw, value in fields.items():
        if raw == ANONYMOUS_FIELD:
            anonymous = int(value) if value.isdigit() else 0
            continue
        field, span = decode_field(raw), decode_span(value)
        if field is not None and span is not None:
            records.append(Record(*field, *span))
    return records, anonymous


#: The ledger hash's field of the anonymous count: not a JSON array, so never a record's.
ANONYMOUS_FIELD = b"anonymous"


def delivered_to(records: Iterable[Record]) -> list[str]:
    """The partners that received any version (a withdrawal alone does not count), sorted."""
    return sorted({r.partner for r in records if r.mark != WITHDRAWAL})


def deliveries(
    guid: str, withdrawn: bool, records: Sequence[Record], anonymous: int
) -> dict[str, Any]:
    """The answer of ``GET /v1/stories/<guid>/deliveries``: one row per partner and channel.

    ``withdrawal_reached`` is None for a story that is not withdrawn.
    """
    rows: dict[tuple[str, str], list[Record]] = {}
    for record in records:
        rows.setdefault((record.partner, record.channel), []).append(record)
    out: list[dict[str, Any]] = []
    for (partner, channel), group in sorted(rows.items()):
        versions = sorted(r.mark for r in group if isinstance(r.mark, int))
        reached = any(r.mark == WITHDRAWAL for r in group)
        out.append({
            "partner": partner,
            "channel": channel,
            "versions": versions,
            "first": rfc3339(min(r.first for r in group)),
            "last": rfc3339(max(r.last for r in group)),
            "withdrawal_reached": reached if withdrawn else None,
        })
    return {
        "guid": guid,
        "withdrawn": withdrawn,
        "delivered_to": delivered_to(records),
        "deliveries": out,
        "anonymous": anonymous,
    }
