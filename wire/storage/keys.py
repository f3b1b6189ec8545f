"""Every Redis key wire uses, in one place.

One stream holds every item in publish order; its entry ids are the global
order and every client's cursor. Side keys serve idempotent publishing,
stories and embargoes. All keys share a prefix so several wires can share one
Redis.

No user-chosen string (guid, Idempotency-Key) ever appears in a key as is:
each is replaced by its SHA-256 hex digest, a fixed 64 characters, and the
structural suffixes (``:tags``, ``:ids``) come after it. So every function
below is injective and no two of them can return the same key: a guid such
as ``x:ids`` cannot address the side keys of the story ``x`` (before this,
``wire:story:<guid>`` and ``wire:story:<guid>:ids`` shared one namespace).
The namespaces (``s:``, ``e:``) are new with that change, so keys written by
an older wire are never mistaken for current ones (docs/operations.md).
"""

from __future__ import annotations

import hashlib

PREFIX = "wire:"

#: The item stream. Entry fields: ``j`` item JSON without its id, ``t`` tags
#: joined by spaces (so the gateway routes without parsing JSON), ``u`` urgency,
#: ``g`` guid.
STREAM = PREFIX + "items"


def _digest(user: str) -> str:
    """The fixed-length stand-in for a user-chosen string inside a key."""
    return hashlib.sha256(user.encode("utf-8", "surrogatepass")).hexdigest()


def idempotency(key: str) -> str:
    """Where a publish's Idempotency-Key remembers the item it created."""
    return PREFIX + "idem:" + _digest(key)


def story(guid: str) -> str:
    """A story's hash: its version counter (and its withdrawal, once withdrawn)."""
    return PREFIX + "s:" + _digest(guid)


def story_tags(guid: str) -> str:
    """The union of a story's tags over all its versions (a set)."""
    return PREFIX + "s:" + _digest(guid) + ":tags"


def story_ids(guid: str) -> str:
    """The stream ids of a story's versions, oldest first (a list)."""
    return PREFIX + "s:" + _digest(guid) + ":ids"


def ledger(guid: str) -> str:
    """Who received which versions of the story ``guid`` (a hash; see wire.storage.ledger)."""
    return PREFIX + "s:" + _digest(guid) + ":ledger"


def translations(guid: str) -> str:
    """The guids of the stories that translate the story ``guid`` (a set)."""
    return PREFIX + "s:" + _digest(guid) + ":translations"


#: Pending embargoed items: a sorted set of their :func:`embargo` keys scored
#: by release time (ms). Members are keys, not guids, so the release script
#: never has to build a key itself (Lua has no SHA-256).
EMBARGOES = PREFIX + "embargo:schedule"


def embargo(guid: str) -> str:
    """The pending (embargoed) item of a story: a hash of what its release needs."""
    return PREFIX + "e:" + _digest(guid)


#: Every webhook's id (a set). Ids are server-generated random hex, checked
#: before any key is built from one.
WEBHOOKS = PREFIX + "webhooks"


def webhook(webhook_id: str) -> str:
    """A webhook's hash: url, filter, secret, status, cursor and counters."""
    return PREFIX + "wh:" + webhook_id


def webhook_lease(webhook_id: str) -> str:
    """The lease (a string with a PX expiry) of the deliverer delivering a webhook."""
    return PREFIX + "wh:" + webhook_id + ":lease"
