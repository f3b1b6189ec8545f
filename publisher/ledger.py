"""The delivery ledger's HTTP edge: the admins' read, and recording reads by named tokens.

``GET /v1/stories/<guid>/deliveries`` (admin) answers, per partner and
channel, the versions received, the first and last time and whether the
withdrawal reached it, with the count of anonymous live deliveries. Partner
names appear only here and in the withdraw answer (an editor route): no
reader's route or error ever names one.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from aiohttp import web

from publisher.access import require_admin
from wire.core import ledger
from wire.core.entitlements import Grant
from wire.core.entry import Entry
from wire.core.errors import NotFound, quoted
from wire.storage.ledger import FLUSH_ERRORS
from wire.web.appkeys import LEDGER, TALLY
from wire.web.http import json_response

log = logging.getLogger("wire.publisher.ledger")


def setup_ledger(app: web.Application) -> None:
    """Add the deliveries route."""
    app.router.add_get("/v1/stories/{guid}/deliveries", get_deliveries)


def record(request: web.Request, grant: Grant, channel: str, entries: Sequence[Entry]) -> None:
    """A reader with a named token was answered ``entries`` by ``channel``: record it.

    Versions of a withdrawn story go out as stubs (their content removed), so
    of such a story only its withdrawal is recorded. A ``HEAD`` is answered
    without its body: nothing was delivered, nothing is recorded.
    """
    if grant.name is None or not entries or request.method == "HEAD":
        return
    withdrawn = {e.guid for e in entries if e.withdrawal}
    if withdrawn:
        entries = [e for e in entries if e.withdrawal or e.guid not in withdrawn]
    request.app[TALLY].add(grant.name, channel, entries)


async def delivered_to(request: web.Request, guid: str) -> list[str]:
    """The partners that received any version of ``guid``, after flushing this
    process's records (other processes' arrive within their flush interval).

    Asked right after a withdrawal was stored: a flush that fails then must
    not turn that success into an error (its records wait for the next one).
    """
    book = request.app[LEDGER]
    try:
        await book.flush()
    except FLUSH_ERRORS as err:
        log.warning("delivery ledger: flush before delivered_to failed: %r", err)
    return ledger.delivered_to((await book.read(guid)).records)


async def get_deliveries(request: web.Request) -> web.Response:
    """Who received which versions of a story, by channel (admin only)."""
    require_admin(request)
    guid = request.match_info["guid"]
    book = request.app[LEDGER]
    await book.flush()
    found = await book.read(guid)
    if not found.exists:
        raise NotFound(f"no story with guid {quoted(guid)}")
    return json_response(
        {"story": ledger.deliveries(guid, found.withdrawn, found.records, found.anonymous)}
    )
