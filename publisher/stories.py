"""Stories: every version of one guid, and their withdrawal (a kill)."""

from __future__ import annotations

import orjson
from aiohttp import web

from publisher.access import require_editor, require_reader
from publisher.items import ninjs_response, read_json
from publisher.ledger import delivered_to, record
from publisher.query import query_limit, query_number
from wire.core import ninjs
from wire.core.entitlements import Sees
from wire.core.entry import Entry
from wire.core.errors import NotFound, ValidationError, quoted
from wire.core.items import check_text
from wire.core.ledger import HISTORY
from wire.storage.store import Written
from wire.storage.story_pages import StoryPage
from wire.web.appkeys import STORE
from wire.web.http import raw_json

MAX_REASON = 1_000
#: Versions one story read answers at most (``?limit``), and by default.
STORY_LIMIT = 100
#: The greatest ``?before`` taken: far above any story's version count.
MAX_BEFORE = 999_999_999


def setup_stories(app: web.Application) -> None:
    """Add the story routes."""
    app.router.add_get("/v1/stories/{guid}", get_story)
    app.router.add_post("/v1/stories/{guid}/withdraw", withdraw_story)


async def get_story(request: web.Request) -> web.Response:
    """``{"story": {"guid", "translation_of"?, "current", "versions": [oldest first],
    "older"?, "translations": [{"guid", "language", "version"}]}}``: the newest
    ``limit`` versions below ``before`` (about ANSWER_BYTES of them at most), the
    versions and translations within the reader's grant only."""
    grant = require_reader(request)
    as_ninjs = ninjs.wants_ninjs(request.query)
    limit = query_limit(request, STORY_LIMIT)
    before = query_before(request)
    guid = request.match_info["guid"]
    store = request.app[STORE]
    if grant.tags is not None and not await store.story_maybe_seen(guid, grant.sees):
        raise NotFound(f"no story with guid {quoted(guid)}")
    page = await store.story_page(guid, limit, before)
    # Only the versions within the grant (a withdrawal with only granted tags);
    # a story with none is answered exactly like a missing one.
    found = await store.story_current(page, grant.sees)
    current = grant.view(found) if found is not None else None
    if current is None:
        raise NotFound(f"no story with guid {quoted(guid)}")
    versions = grant.visible(page.versions)
    # What is answered: the page, and the current version when it is not on it
    # (of a withdrawn story, that is the withdrawal: record() keeps only it).
    shown = versions if any(v.id == current.id for v in versions) else [*versions, current]
    record(request, grant, HISTORY, shown)
    if as_ninjs:
        return await _story_ninjs(request, page, current, versions, grant.sees)
    original = None if current.withdrawal else orjson.loads(current.json).get("translation_of")
    # A limited reader is told each translation's newest version it may read.
    sees = grant.sees if grant.tags is not None else None
    translations = [_translation(e) for e in grant.visible(await store.translations(guid, sees))]
    # The guid goes through the JSON encoder like every other value: it comes
    # from the URL, and only today's guid rules keep it free of quotes.
    body = (
        b'{"story":{"guid":'
        + orjson.dumps(guid)
        + (b',"translation_of":' + orjson.dumps(original) if original else b"")
        + b',"current":'
        + current.json
        + b',"versions":['
        + b",".join(v.json for v in versions)
        + b"]"
        + (b',"older":%d' % page.older if page.older is not None else b"")
        + b',"translations":'
        + orjson.dumps(translations)
        + b"}}"
    )
    return raw_json(body)


def query_before(request: web.Request) -> int | None:
    """``?before=N``: read the versions numbered below N (2 to MAX_BEFORE)."""
    return query_number(
        request, "before", 2, MAX_BEFORE, "a version number (a story read's older)"
    )


async def _story_ninjs(
    request: web.Request,
    page: StoryPage,
    current: Entry,
    versions: list[Entry],
    sees: Sees,
) -> web.Response:
    """The story read as ninjs: ``current`` with the page in ``wire:versions``."""
    items = [orjson.loads(v.json) for v in versions]
    first = ninjs.first_created(items)
    if first is None and page.older is not None:  # version 1 is older: read just it
        first = (await request.app[STORE].first_published([page.guid], sees)).get(page.guid)
    doc = ninjs.story_to_ninjs(orjson.loads(current.json), items, first)
    if page.older is not None:
        doc[ninjs.OLDER] = page.older
    return ninjs_response(doc)


async def _withdraw(request: web.Request, guid: str, reason: str) -> Written:
    """The withdrawal of ``guid``; a 404 for a story whose only version is under
    embargo says so: the item would otherwise go out at its time while the
    editor believes there was nothing to kill."""
    store = request.app[STORE]
    try:
        return await store.withdraw(guid, reason)
    except NotFound:
        if not await store.embargo_pending(guid):
            raise
    raise NotFound(
        f"no story with guid {quoted(guid)} was published yet, but an embargoed item of it"
        " is pending: cancel it with DELETE /v1/embargoes/<guid>"
    )


def _translation(entry: Entry) -> dict[str, object]:
    """How a story read names one translation: its guid, language and current version."""
    item = orjson.loads(entry.json)
    return {"guid": entry.guid, "language": item.get("language"), "version": item["version"]}


async def withdraw_story(request: web.Request) -> web.Response:
    """Kill a story: 200, the withdrawal (delivered to everyone who matched it) and
    ``delivered_to``, the partners the ledger knows received any version."""
    require_editor(request)
    data = await read_json(request)
    if not isinstance(data, dict):
        raise ValidationError('the request body must be a JSON object like {"reason": "..."}')
    # The reason reaches every subscriber's screen: the item text rules apply.
    reason = check_text(data.get("reason"), "reason", MAX_REASON, required=True, multiline=False)
    assert reason is not None  # required=True
    guid = request.match_info["guid"]
    published = await _withdraw(request, guid, reason)
    # Who received the story (the ledger): this process's records are flushed
    # first; other processes' arrive within their flush interval.
    partners = await delivered_to(request, guid)
    return raw_json(
        b'{"item":' + published.json + b',"delivered_to":' + orjson.dumps(partners) + b"}"
    )
