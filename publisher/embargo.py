"""Embargoed items: accepted now, invisible until their time, released once.

Every publisher process runs a releaser that polls the schedule (a Redis
sorted set) a few times a second. Release is the publish script with a guard
that removes the guid from the schedule first: however many publishers race,
only the one whose removal succeeds publishes, and a publisher killed at the
due moment either published (atomically) or left it for the others.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import orjson
from aiohttp import web

from publisher.access import require_editor
from wire.appkeys import SETTINGS, STORE
from wire.errors import NotFound, quoted
from wire.http import REDIS_DOWN, json_response, raw_json
from wire.items import Submission, parse_submission
from wire.store import Store

log = logging.getLogger("wire.embargo")


def setup_embargoes(app: web.Application) -> None:
    """Routes to list and cancel pending items, and the releaser task."""
    app.router.add_get("/v1/embargoes", list_embargoes)
    app.router.add_delete("/v1/embargoes/{guid}", cancel_embargo)
    app.cleanup_ctx.append(_releaser_ctx)


async def accept_embargoed(request: web.Request, sub: Submission) -> web.Response:
    """202: stored as pending, with no stream id until it is released."""
    pending = orjson.dumps(sub.pending())
    await request.app[STORE].embargo(sub, pending)
    return raw_json(b'{"item":' + pending + b"}", 202)


async def list_embargoes(request: web.Request) -> web.Response:
    """Pending embargoed items, soonest first (editor token)."""
    require_editor(request)
    pending = await request.app[STORE].embargoes()
    return raw_json(b'{"embargoes":[' + b",".join(pending) + b"]}")


async def cancel_embargo(request: web.Request) -> web.Response:
    """Cancel a pending item (editor token); 404 when none is pending."""
    require_editor(request)
    guid = request.match_info["guid"]
    if not await request.app[STORE].cancel_embargo(guid):
        raise NotFound(f"no pending embargoed item for guid {quoted(guid)}")
    return json_response({"cancelled": guid})


async def release_due(store: Store) -> int:
    """Publish every item whose embargo has passed; return how many this call released."""
    released = 0
    for guid, pending in await store.due_embargoes(int(time.time() * 1000)):
        data = orjson.loads(pending)
        fields = {k: v for k, v in data.items() if k not in ("pubstatus", "embargo_until")}
        sub = parse_submission(fields)  # stored by us after validation: cannot fail
        try:
            await store.publish(sub, release=True)
        except NotFound:
            continue  # another publisher released (or an editor cancelled) it first
        released += 1
        log.info("embargo released", extra={"guid": guid})
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
        except REDIS_DOWN as err:
            log.warning("embargo releaser: redis unavailable (%s)", err)
        await asyncio.sleep(interval)


async def _releaser_ctx(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(
        _release_forever(app[STORE], app[SETTINGS].embargo_poll), name="wire-embargo"
    )
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
