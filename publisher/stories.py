"""Stories: every version of one guid, and their withdrawal (a kill)."""

from __future__ import annotations

import orjson
from aiohttp import web

from publisher.access import require_editor, require_reader
from publisher.items import ninjs_response, read_json
from publisher.ledger import delivered_to, record
from wire.core import ninjs
from wire.core.entry import Entry
from wire.core.errors import NotFound, ValidationError, quoted
from wire.core.items import check_text
from wire.core.ledger import HISTORY
from wire.web.appkeys import STORE
from wire.web.http import raw_json

MAX_REASON = 1_000


def setup_stories(app: web.Application) -> None:
    """Add the story routes."""
    app.router.add_get("/v1/stories/{guid}", get_story)
    app.router.add_post("/v1/stories/{guid}/withdraw", withdraw_story)


async def get_story(request: web.Request) -> web.Response:
    """``{"story": {"guid", "translation_of"?, "current", "versions": [oldest first],
    "translations": [{"guid", "language", "version"}]}}``, the versions and the
    translations within the reader's grant only."""
    grant = require_reader(request)
    as_ninjs = ninjs.wants_ninjs(request.query)
    guid = request.match_info["guid"]
    store = request.app[STORE]
    # Only the versions within the grant (a withdrawal with only granted tags);
    # a story with none is answered exactly like a missing one.
    versions = grant.visible(await store.story(guid))
    if not versions:
        raise NotFound(f"no story with guid {quoted(guid)}")
    record(request, grant, HISTORY, versions)
    if as_ninjs:  # the current version as ninjs, every version in "wire:versions"
        return ninjs_response(ninjs.story_to_ninjs([orjson.loads(v.json) for v in versions]))
    current = versions[-1]
    original = None if current.withdrawal else orjson.loads(current.json).get("translation_of")
    translations = [_translation(e) for e in grant.visible(await store.translations(guid))]
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
        + b'],"translations":'
        + orjson.dumps(translations)
        + b"}}"
    )
    return raw_json(body)


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
    published = await request.app[STORE].withdraw(guid, reason)
    # Who received the story (the ledger): this process's records are flushed
    # first; other processes' arrive within their flush interval.
    partners = await delivered_to(request, guid)
    return raw_json(
        b'{"item":' + published.json + b',"delivered_to":' + orjson.dumps(partners) + b"}"
    )
