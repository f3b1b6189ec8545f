"""Every Redis key wire uses, in one place.

One stream holds every item in publish order; its entry ids are the global
order and every client's cursor. Side keys serve idempotent publishing and
stories. All keys share a prefix so several wires can share one Redis.
"""

from __future__ import annotations

import hashlib

PREFIX = "wire:"

#: The item stream. Entry fields: ``j`` item JSON without its id, ``t`` tags
#: joined by spaces (so the gateway routes without parsing JSON), ``u`` urgency,
#: ``g`` guid.
STREAM = PREFIX + "items"


def idempotency(key: str) -> str:
    """Where a publish's Idempotency-Key remembers the item it created."""
    return PREFIX + "idem:" + hashlib.sha256(key.encode()).hexdigest()


def story(guid: str) -> str:
    """A story's hash: its version counter."""
    return PREFIX + "story:" + guid


def story_tags(guid: str) -> str:
    """The union of a story's tags over all its versions (a set)."""
    return PREFIX + "story:" + guid + ":tags"


def story_ids(guid: str) -> str:
    """The stream ids of a story's versions, oldest first (a list)."""
    return PREFIX + "story:" + guid + ":ids"


#: Pending embargoed items: a sorted set of guids scored by release time (ms).
EMBARGOES = PREFIX + "embargo:due"


def embargo(guid: str) -> str:
    """The pending (embargoed) item of a story, as JSON."""
    return PREFIX + "embargo:item:" + guid
