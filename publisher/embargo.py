"""Embargoed items: accepted now, invisible until their time, released once.

Every publisher process runs a releaser that polls the schedule (a Redis
sorted set) a few times a second. A release is one Lua script per batch of up
to 500 due items: it takes them off the schedule and publishes each exactly
as ``POST /v1/items`` would, so however many publishers race, each item is
published once, and a publisher killed at the due moment either published a
batch (atomically) or left it for the others.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import math
import re
import time
from collections.abc import AsyncIterator

import orjson
from aiohttp import web

from publisher.access import require_editor
from publisher.query import query_limit
from wire.core.errors import NotFound, ServiceUnavailable, ValidationError, quoted
from wire.core.items import Submission
from wire.runtime.supervisor import SUPERVISOR
from wire.storage.store import CURSOR_MEMBER, RELEASE_BATCH, EmbargoCursor, Store
from wire.web.appkeys import SETTINGS, STORE
from wire.web.http import json_response, raw_json, redis_unavailable

log = logging.getLogger("wire.embargo")


def setup_embargoes(app: web.Application) -> None:
    """Routes to list and cancel pending items, and the releaser task."""
    app.router.add_get("/v1/embargoes", list_embargoes)
    app.router.add_delete("/v1/embargoes/{guid}", cancel_embargo)
    app.cleanup_ctx.append(_releaser_ctx)


async def accept_embargoed(
    request: web.Request, sub: Submission, key: str | None, digest: str
) -> web.Response:
    """202 and the pending item (no stream id until it is released).

    With an Idempotency-Key a repeat answers 200 and the first pending item,
    and the key with another body is 422, as for an immediate publish. Under
    a withdrawn story's guid: 409 ``story_withdrawn``.
    """
    pending = orjson.dumps(sub.pending())
    held = await request.app[STORE].embargo(sub, pending, idempotency_key=key, digest=digest)
    return raw_json(b'{"item":' + held.json + b"}", 202 if held.created else 200)


#: ``?after=`` of a listing: the score (due ms) and the schedule member the
#: last page ended with (at most CURSOR_MEMBER bytes), base64url; opaque to
#: clients, who only pass ``next`` on.
_CURSOR = re.compile(
    r"([-+.0-9a-z]{1,40})~([A-Za-z0-9_-]{1," + str(CURSOR_MEMBER * 4 // 3) + "})"
)


async def list_embargoes(request: web.Request) -> web.Response:
    """Pending embargoed items, soonest first, a page at a time (editor token).

    ``?limit=`` (1-500, 50 by default) and ``?after=``, the ``next`` of the
    page before: a page costs the same however many are pending.
    """
    require_editor(request)
    raw = request.query.get("after")
    after = None if raw is None else parse_embargo_cursor(raw)
    pending, going_on = await request.app[STORE].embargoes(query_limit(request), after)
    tail = b"" if going_on is None else b',"next":"%s"' % format_embargo_cursor(going_on)
    return raw_json(b'{"embargoes":[' + b",".join(pending) + b"]" + tail + b"}")


def format_embargo_cursor(cursor: EmbargoCursor) -> bytes:
    """The ``next`` of a listing page. Without the "+" of an exponent (a score
    written by hand, "1e+20"): a client that puts ``next`` in a URL as it is
    would send a space."""
    score = cursor.score.replace(b"+", b"")
    return score + b"~" + base64.urlsafe_b64encode(cursor.member).rstrip(b"=")


def parse_embargo_cursor(raw: str) -> EmbargoCursor:
    """A listing's ``?after=``, as :func:`format_embargo_cursor` wrote it; else 400."""
    match = _CURSOR.fullmatch(raw)
    try:
        if match is None or math.isnan(float(match.group(1))):
            raise ValueError
        member = base64.urlsafe_b64decode(match.group(2) + "=" * (-len(match.group(2)) % 4))
    except (ValueError, binascii.Error):
        raise ValidationError(
            "after must be the next of an earlier page of GET /v1/embargoes", field="after"
        ) from None
    return EmbargoCursor(match.group(1).encode(), member)


async def cancel_embargo(request: web.Request) -> web.Response:
    """Cancel a pending item (editor token); 404 when none is pending."""
    require_editor(request)
    guid = request.match_info["guid"]
    if not await request.app[STORE].cancel_embargo(guid):
        raise NotFound(f"no pending embargoed item for guid {quoted(guid)}")
    return json_response({"cancelled": guid})


async def release_due(store: Store, batch: int = RELEASE_BATCH) -> int:
    """Publish every item whose embargo has passed; return how many this call released."""
    now_ms = int(time.time() * 1000)
    released = 0
    while True:
        results = await store.release_embargoes(now_ms, batch)
        for status, guid, detail in results:
            if status == "new":
                released += 1
                log.info("embargo released", extra={"guid": guid, "id": detail})
            elif status == "withdrawn":
                log.warning("embargo dropped: story %r was withdrawn while it was pending", guid)
            elif status == "original_withdrawn":
                log.warning("embargo dropped: the story %r translates was withdrawn", guid)
            elif status == "conflict":
                log.error("embargo of %r held back: redis key %r has a foreign type", guid, detail)
            else:
                log.error("embargo schedule named a missing or damaged item %r; unscheduled", guid)
        # Fewer than a batch: nothing else was due at now_ms (items falling
        # due meanwhile wait for the next poll, so this loop always ends).
        if len(results) < batch:
            return released


async def _release_forever(store: Store, interval: float) -> None:
    task = asyncio.current_task()
    while True:
        # A cancel that lands mid-command can be lost inside redis-py (3.11's
        # asyncio.wait_for drops it, or it comes out as a ConnectionError);
        # without this check the app's shutdown would wait forever.
        if task is not None and task.cancelling():
            raise asyncio.CancelledError
        try:
            await release_due(store)
        except Exception as err:
            if isinstance(err, ServiceUnavailable) or redis_unavailable(err):
                # Unreachable, or refusing writes (out of memory, a read-only
                # replica): a warning, not a traceback every poll.
                log.warning("embargo releaser: redis unavailable (%s)", err)
            else:
                # Whatever went wrong with this round, the next one must come:
                # every later embargo depends on this loop.
                log.exception("embargo releaser: release failed; trying again")
        await asyncio.sleep(interval)


async def _releaser_ctx(app: web.Application) -> AsyncIterator[None]:
    supervisor = app[SUPERVISOR]
    store, interval = app[STORE], app[SETTINGS].embargo_poll
    supervisor.start("embargo", lambda: _release_forever(store, interval))
    yield
    await supervisor.stop("embargo")
