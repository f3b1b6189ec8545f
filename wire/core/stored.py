"""The stored item's JSON, byte for byte: the one home of its layout.

A stream entry's ``j`` field holds an item's JSON without its ``id`` (the id
is the entry's own, known only once Redis has appended it; :func:`with_id`
puts it in on the way out). A version reads::

    {"guid":G,"version":V,"mark":M,"pubstatus":"usable","published_at":"T",
     "urgency":U,"title":..,"subtitle":..,"tags":[..],"url":..,"body":..}

and a withdrawal (a kill notice)::

    {"guid":G,"version":V,"pubstatus":"canceled","published_at":"T",
     "reason":R,"tags":[..]}

Atomicity puts the last steps inside Redis: only the Lua scripts of
:mod:`wire.storage.scripts` know the version V (the story's counter, incremented
in the same script that appends) and a withdrawal's tags (every tag the story
ever had, a Redis set). So this module builds everything else as pieces, and
the scripts only splice them, in the order :func:`version_json` and
:func:`withdrawal_json` do here. These two pure functions are what the scripts
must produce; tests/test_stored.py holds the scripts to them through a real
Redis.

Why the scripts cannot be handed a finished withdrawal: its version and tags
would have to be read first and written back later, and a publish landing in
between would be lost from the tags or numbered twice. One script, reading and
writing together, is what makes both exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson

#: Between the version and the mark (the scripts put the version before it).
MARK_KEY = b',"mark":'
#: The mark of an item sent without one, as JSON.
NO_MARK = b"null"
#: The mark of a later version sent without one: editors see at a glance
#: that a story moved on.
UPDATED = b'"Updated"'
#: The fields of a stub (a withdrawn story's version, its content removed).
STUB_FIELDS = ("id", "guid", "version", "published_at", "tags")


class Content(Protocol):
    """What the layout reads from an item (a :class:`wire.core.items.Submission`)."""

    @property
    def guid(self) -> str: ...
    @property
    def title(self) -> str: ...
    @property
    def tags(self) -> tuple[str, ...]: ...
    @property
    def subtitle(self) -> str | None: ...
    @property
    def body(self) -> str | None: ...
    @property
    def mark(self) -> str | None: ...
    @property
    def url(self) -> str | None: ...
    @property
    def urgency(self) -> int: ...
    @property
    def embargo_until(self) -> datetime | None: ...
    def content(self) -> dict[str, Any]:
        """The newsroom fields (language, type, byline...), absent ones left out."""


@dataclass(frozen=True, slots=True)
class Pieces:
    """An item as the scripts receive it: everything of its JSON but version and time.

    ``head``, ``mark`` and ``rest`` are also what an embargoed item keeps in
    Redis until its release (fields ``h``, ``m``, ``r``): their bytes must
    stay as they are, or items scheduled before an upgrade would come out
    different after it.
    """

    #: ``{"guid":G,"version":`` (the script adds the version).
    head: bytes
    #: The editor's mark as JSON (:data:`NO_MARK` when none).
    mark: bytes
    #: ``,"urgency":..,...,"body":..}``: the content, after the time.
    rest: bytes
    #: The entry's ``t`` field: tags joined by spaces (the gateway routes on it).
    tags: str
    #: The entry's ``u`` field.
    urgency: int


@dataclass(frozen=True, slots=True)
class Layout:
    """The pieces every version shares, for a given time (one per write script call)."""

    #: ``,"pubstatus":"usable","published_at":"T"``
    stamp: bytes
    mark_key: bytes = MARK_KEY
    no_mark: bytes = NO_MARK
    updated: bytes = UPDATED


def pieces(item: Content) -> Pieces:
    """What the publish and embargo scripts build ``item``'s versions from."""
    rest = orjson.dumps(
        {
            "urgency": item.urgency,
            "title": item.title,
            "subtitle": item.subtitle,
            "tags": list(item.tags),
            "url": item.url,
            "body": item.body,
            **item.content(),
        }
    )
    return Pieces(
        head=b'{"guid":' + orjson.dumps(item.guid) + b',"version":',
        mark=orjson.dumps(item.mark),
        rest=b"," + rest[1:],
        tags=" ".join(item.tags),
        urgency=item.urgency,
    )


def layout(at: str) -> Layout:
    """The shared pieces of a version published at ``at`` (see :func:`published_now`)."""
    return Layout(stamp=b',"pubstatus":"usable","published_at":"' + at.encode() + b'"')


def version_json(item: Pieces, version: int, shared: Layout) -> bytes:
    """A version's stored JSON, spliced exactly as the scripts' ``append`` does.

    The script adds, and only adds: the version number (decimal), and for a
    later version sent without a mark ``updated`` in place of ``no_mark``.
    """
    mark = shared.updated if item.mark == shared.no_mark and version > 1 else item.mark
    return item.head + str(version).encode() + shared.mark_key + mark + shared.stamp + item.rest


def first_version(item: Content, at: str) -> bytes:
    """The stored JSON of ``item`` published as a new story's first version at ``at``."""
    return version_json(pieces(item), 1, layout(at))


@dataclass(frozen=True, slots=True)
class WithdrawalPieces:
    """A withdrawal as the script receives it: all but its version and tags."""

    #: ``{"guid":G,"version":``
    head: bytes
    #: ``,"pubstatus":"canceled","published_at":"T","reason":R,"tags":[``
    middle: bytes
    #: ``]}``
    tail: bytes


def withdrawal_pieces(guid: str, reason: str, at: str) -> WithdrawalPieces:
    """What the withdraw script builds a kill notice of ``guid`` from."""
    return WithdrawalPieces(
        head=b'{"guid":' + orjson.dumps(guid) + b',"version":',
        middle=b',"pubstatus":"canceled","published_at":"'
        + at.encode()
        + b'","reason":'
        + orjson.dumps(reason)
        + b',"tags":[',
        tail=b"]}",
    )


def withdrawal_json(parts: WithdrawalPieces, version: int, tags: set[str]) -> bytes:
    """A withdrawal's stored JSON, spliced exactly as the withdraw script does.

    The script adds the version and the story's tags: sorted (byte order of
    UTF-8, which is code point order), each in double quotes, joined by
    commas. Tags need no JSON escaping: :mod:`wire.core.tags` admits only
    letters, marks, digits, ``-`` and ``/``.
    """
    quoted = b",".join(b'"' + t.encode() + b'"' for t in sorted(tags))
    return parts.head + str(version).encode() + parts.middle + quoted + parts.tail


def pending(item: Content) -> dict[str, Any]:
    """The JSON of an accepted embargoed item: no id or version until release."""
    return {
        "guid": item.guid,
        "pubstatus": "withheld",
        "embargo_until": iso(item.embargo_until) if item.embargo_until else None,
        "urgency": item.urgency,
        "mark": item.mark,
        "title": item.title,
        "subtitle": item.subtitle,
        "tags": list(item.tags),
        "url": item.url,
        "body": item.body,
        **item.content(),
    }


def stub(item_json: bytes) -> bytes:
    """A withdrawn story's version (with its id) with its content removed:
    who, when, which version."""
    item = orjson.loads(item_json)
    kept = {k: item[k] for k in STUB_FIELDS}
    kept["pubstatus"] = "canceled"
    return orjson.dumps(kept)


def with_id(entry_id: str, stored: bytes) -> bytes:
    """Put ``"id"`` first into stored item JSON (which is stored without it)."""
    return b'{"id":"' + entry_id.encode() + b'",' + stored[1:]


def published_now() -> str:
    """Now, as the ISO 8601 UTC timestamp with milliseconds used in items."""
    return iso(datetime.now(UTC))


def iso(moment: datetime) -> str:
    """``moment`` as ISO 8601 UTC with milliseconds and a ``Z``."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
