"""Webhooks in Redis: their settings, cursors, counters and delivery leases.

Each write is one Lua script that checks before it writes: a cursor moves
only while the caller still holds the webhook's lease (a deliverer that lost
it, paused or SIGKILLed and replaced, can never move a cursor backwards or
past what the new holder sent), and pause and delete drop the lease. The
holder checks its lease right before every POST (:meth:`Registry.check`, or
the answer of the previous item's cursor write), so once a pause or delete
has answered, at most the one POST already under way arrives.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from wire.core.errors import ValidationError, WebhookDamaged
from wire.core.ids import StreamKey, format_id, parse_id
from wire.storage import keys

log = logging.getLogger("wire.delivery.registry")

#: The status of a webhook whose hash cannot be read (see :meth:`Webhook.damaged`).
DAMAGED = "damaged"

# ARGV: the new id, the most webhooks allowed, then the hash's field/value pairs.
# 0: the id is taken (draw another); -1: the registry is full.
_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if redis.call('SCARD', KEYS[2]) >= tonumber(ARGV[2]) then return -1 end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('SADD', KEYS[2], ARGV[1])
return 1
"""

_CONTROL = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local op = ARGV[1]
-- A key of another type (written by hand) can only be deleted.
if op ~= 'delete' and redis.call('TYPE', KEYS[1])['ok'] ~= 'hash' then return -1 end
if op == 'delete' then
  redis.call('DEL', KEYS[1], KEYS[3])
  redis.call('SREM', KEYS[2], ARGV[2])
elseif op == 'pause' then
  redis.call('HSET', KEYS[1], 'status', 'paused')
  redis.call('DEL', KEYS[3])
elseif op == 'resume' then
  redis.call('HSET', KEYS[1], 'status', 'active')
  redis.call('HDEL', KEYS[1], 'failing_since')
elseif op == 'rotate' then
  redis.call('HSET', KEYS[1], 'secret', ARGV[2])
end
return 1
"""

# A webhook key of another type is never delivered (nor an error: the round
# that takes webhooks one after the other would stop at it every time).
_ACTIVE = """
local function active(webhook)
  return redis.call('TYPE', webhook)['ok'] == 'hash'
    and redis.call('HGET', webhook, 'status') == 'active'
end
"""

# Every lease wire writes expires (PX), whatever its type: a lease key without
# an expiry (written by hand, or of another type) is no deliverer's, and left
# there it would keep the webhook from ever being delivered.
_ACQUIRE = _ACTIVE + """
if not active(KEYS[1]) then return 0 end
if redis.call('PTTL', KEYS[2]) == -1 then redis.call('DEL', KEYS[2]) end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
"""

_RENEW = _ACTIVE + """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
if not active(KEYS[1]) then
  redis.call('DEL', KEYS[2])
  return 0
end
-- Never shortened: a check may have made it cover a POST under way.
if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[2]) then
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
return 1
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"""

#: Pasted at the top of the scripts whose answer is the check before a POST.
#: That POST may last the whole timeout (``cover``, ms): the lease outlives it,
#: so no other deliverer's POST of the same item can overlap it, even when a
#: Redis outage stops the renewals meanwhile.
_COVER = """
local function cover(lease, ms)
  ms = tonumber(ms)
  if ms > 0 and redis.call('PTTL', lease) < ms then redis.call('PEXPIRE', lease, ms) end
end
"""

#: ARGV: lease token, new cursor, delivered increment, last_status ('' keeps it),
#: '1' to mark history_truncated, cover (ms, see _COVER). Sets the cursor as
#: given: only the lease's holder calls it, and it reads in stream order, so
#: the cursor only moves forward. Answers the secret (false when the lease is
#: lost): the deliverer's check before its next POST.
_ADVANCE = _COVER + """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return false end
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
redis.call('HSET', KEYS[1], 'cursor', ARGV[2])
if ARGV[3] ~= '0' then
  redis.call('HINCRBY', KEYS[1], 'delivered', ARGV[3])
  -- last_error is the last answer's text: a 2xx has none.
  redis.call('HDEL', KEYS[1], 'failing_since', 'last_error')
end
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'last_status', ARGV[4]) end
if ARGV[5] == '1' then redis.call('HSET', KEYS[1], 'history_truncated', '1') end
cover(KEYS[2], ARGV[6])
return redis.call('HGET', KEYS[1], 'secret')
"""

#: ARGV: lease token, cover (ms). The secret while the lease is ours (false when
#: lost), the lease made to last at least ``cover`` (the POST that follows).
_CHECK = _COVER + """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return false end
cover(KEYS[2], ARGV[2])
return redis.call('HGET', KEYS[1], 'secret')
"""

#: ARGV: lease token, now (s), last_status, last_error, disable_after (s).
#: Returns 0 (lease lost), 1 (keep retrying) or 2 (disabled now).
_FAILED = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'last_status', ARGV[3], 'last_error', ARGV[4])
local since = tonumber(redis.call('HGET', KEYS[1], 'failing_since'))
if not since then
  since = tonumber(ARGV[2])
  redis.call('HSET', KEYS[1], 'failing_since', ARGV[2])
end
if tonumber(ARGV[2]) - since >= tonumber(ARGV[5]) then
  redis.call('HSET', KEYS[1], 'status', 'disabled')
  redis.call('DEL', KEYS[2])
  return 2
end
return 1
"""


def valid_id(webhook_id: str) -> bool:
    """True for an id this server could have made (32 lowercase hex digits)."""
    return len(webhook_id) == 32 and all(c in "0123456789abcdef" for c in webhook_id)


@dataclass(frozen=True, slots=True)
class Webhook:
    """One webhook as stored."""

    id: str
    url: str
    tags: tuple[str, ...]
    languages: tuple[str, ...]
    description: str
    partner: str
    secret: str
    status: str
    cursor: StreamKey
    delivered: int
    last_status: int | None
    last_error: str | None
    failing_since: float | None
    history_truncated: bool
    created: float

    @classmethod
    def from_hash(cls, webhook_id: str, h: dict[bytes, bytes]) -> Webhook:
        """Build from HGETALL's answer; a hash no writer of wire makes (a field
        missing or unreadable) gives a :meth:`damaged` stand-in, logged.

        Raising here made every read of the webhook (its deliverer, GET, the
        list of all webhooks, pause/resume's answer) a 500 or a 400 naming
        "id", with nothing saying which webhook or what was wrong.
        """
        try:
            return cls._parse(webhook_id, h)
        # ValueError: UnicodeDecodeError, int()/float(); ValidationError: the cursor.
        except (KeyError, ValueError, ValidationError) as err:
            log.error("webhook %s is damaged (%r); not delivered", webhook_id, err)
            return cls.damaged(webhook_id, f"damaged: {err!r}"[:500])

    @classmethod
    def damaged(cls, webhook_id: str, why: str) -> Webhook:
        """A stand-in: status ``damaged`` (never delivered), ``last_error`` why."""
        return cls(
            id=webhook_id, url="", tags=(), languages=(), description="", partner="",
            secret="", status=DAMAGED, cursor=(0, 0), delivered=0, last_status=None,
            last_error=why, failing_since=None, history_truncated=False, created=0.0,
        )

    @classmethod
    def _parse(cls, webhook_id: str, h: dict[bytes, bytes]) -> Webhook:
        s = {k.decode(): v.decode() for k, v in h.items()}
        return cls(
            id=webhook_id,
            url=s["url"],
            tags=tuple(s["tags"].split(" ")),
            languages=tuple(s["languages"].split(" ")) if s.get("languages") else (),
            description=s.get("description", ""),
            partner=s.get("partner", ""),
            secret=s["secret"],
            status=s["status"],
            cursor=parse_id(s["cursor"]),
            delivered=int(s.get("delivered", "0")),
            last_status=int(s["last_status"]) if s.get("last_status") else None,
            last_error=s.get("last_error") or None,
            failing_since=float(s["failing_since"]) if s.get("failing_since") else None,
            history_truncated=s.get("history_truncated") == "1",
            created=float(s.get("created", "0")),
        )

    def public(self) -> dict[str, Any]:
        """What the admin API shows (never the secret)."""
        return {
            "id": self.id,
            "url": self.url,
            "tags": list(self.tags),
            "languages": list(self.languages),
            "description": self.description,
            "partner": self.partner or None,
            "status": self.status,
            "cursor": format_id(self.cursor),
            "delivered": self.delivered,
            "last_status": self.last_status,
            "last_error": self.last_error,
            "failing_since": self.failing_since,
            "history_truncated": self.history_truncated,
            "created": self.created,
        }


def _webhook(webhook_id: str, h: dict[bytes, bytes] | ResponseError) -> Webhook:
    """A webhook from its HGETALL (an error: its key holds another type)."""
    if isinstance(h, ResponseError):
        log.error("webhook %s is damaged (%s); not delivered", webhook_id, h)
        return Webhook.damaged(webhook_id, "damaged: its key in Redis is not a hash")
    return Webhook.from_hash(webhook_id, h)


class Registry:
    """The webhooks of one wire, in its Redis."""

    def __init__(self, redis: aioredis.Redis, cover_ms: int = 0) -> None:
        """``cover_ms``: how long a lease must last after each check (a deliverer's
        POST timeout and a margin; 0 for readers that never POST)."""
        self.redis = redis
        self.cover_ms = cover_ms
        self._create = redis.register_script(_CREATE)
        self._control = redis.register_script(_CONTROL)
        self._acquire = redis.register_script(_ACQUIRE)
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)
        self._advance = redis.register_script(_ADVANCE)
        self._check = redis.register_script(_CHECK)
        self._failed = redis.register_script(_FAILED)

    async def create(self, fields: dict[str, str], most: int) -> str | None:
        """Store a new webhook (fields as the hash holds them); return its new id,
        or None when ``most`` webhooks are already registered (nothing written)."""
        while True:
            webhook_id = secrets.token_hex(16)
            args: list[str | int] = [webhook_id, most]
            for k, v in fields.items():
                args += [k, v]
            made = await self._create(keys=[keys.webhook(webhook_id), keys.WEBHOOKS], args=args)
            if made == -1:
                return None
            if made:
                return webhook_id

    async def ids(self) -> list[str]:
        """Every webhook id."""
        members: Any = await self.redis.smembers(keys.WEBHOOKS)
        return sorted(m.decode() for m in members)

    async def all(self) -> list[Webhook]:
        """Every webhook, read in one round trip (one deleted meanwhile is left out)."""
        found = await self.ids()
        pipe = self.redis.pipeline(transaction=False)
        for webhook_id in found:
            pipe.hgetall(keys.webhook(webhook_id))
        hashes: list[Any] = await pipe.execute(raise_on_error=False) if found else []
        return [_webhook(i, h) for i, h in zip(found, hashes, strict=True) if h]

    async def get(self, webhook_id: str) -> Webhook | None:
        """One webhook, or None."""
        if not valid_id(webhook_id):
            return None
        try:
            h: Any = await self.redis.hgetall(keys.webhook(webhook_id))
        except ResponseError as err:
            h = err
        return _webhook(webhook_id, h) if h else None

    async def control(self, webhook_id: str, op: str, arg: str = "") -> bool:
        """delete, pause, resume or rotate (arg: the new secret); False when unknown,
        WebhookDamaged when its key holds another type (it can only be deleted)."""
        if not valid_id(webhook_id):
            return False
        k = [keys.webhook(webhook_id), keys.WEBHOOKS, keys.webhook_lease(webhook_id)]
        done = await self._control(keys=k, args=[op, arg or webhook_id])
        if done == -1:
            raise WebhookDamaged(
                f"webhook {webhook_id}'s data in Redis is damaged (its key is not a hash):"
                " delete it and create it again"
            )
        return bool(done)

    async def acquire(self, webhook_id: str, token: str, lease_ms: int) -> bool:
        """Take the webhook's lease if it is active and nobody holds it."""
        k = [keys.webhook(webhook_id), keys.webhook_lease(webhook_id)]
        return bool(await self._acquire(keys=k, args=[token, lease_ms]))

    async def renew(self, webhook_id: str, token: str, lease_ms: int) -> bool:
        """Extend a held lease; False when lost (expired, paused, deleted, disabled)."""
        k = [keys.webhook(webhook_id), keys.webhook_lease(webhook_id)]
        return bool(await self._renew(keys=k, args=[token, lease_ms]))

    async def release(self, webhook_id: str, token: str) -> None:
        """Give the lease back (only if still ours)."""
        await self._release(keys=[keys.webhook_lease(webhook_id)], args=[token])

    async def advance(
        self,
        webhook_id: str,
        token: str,
        cursor: StreamKey,
        *,
        delivered: int = 0,
        last_status: int | None = None,
        truncated: bool = False,
    ) -> str | None:
        """Move the cursor (and count a delivery); the secret, or None when the lease is lost.

        The secret comes from the same script that found the lease still ours,
        so the answer is also the check before the next POST (see
        :meth:`check`).
        """
        k = [keys.webhook(webhook_id), keys.webhook_lease(webhook_id)]
        args: list[str | int] = [
            token, format_id(cursor), delivered,
            "" if last_status is None else str(last_status), "1" if truncated else "",
            self.cover_ms,
        ]
        return _text(await self._advance(keys=k, args=args))

    async def check(self, webhook_id: str, token: str) -> str | None:
        """The current secret while the lease is ours, else None.

        Read right before each POST (no other await in between), so a pause,
        delete or take-over answered before it stops delivery at once, and a
        rotation applies to the very next POST.
        """
        k = [keys.webhook(webhook_id), keys.webhook_lease(webhook_id)]
        return _text(await self._check(keys=k, args=[token, self.cover_ms]))

    async def failed(
        self, webhook_id: str, token: str, now: float, status: int, error: str,
        disable_after: float,
    ) -> int:
        """Record a failed attempt: 0 lease lost, 1 retry, 2 now disabled."""
        k = [keys.webhook(webhook_id), keys.webhook_lease(webhook_id)]
        return int(await self._failed(keys=k, args=[token, now, status, error, disable_after]))


def _text(raw: Any) -> str | None:
    return raw.decode() if isinstance(raw, bytes) else None
