"""``GET /v1/feed.atom``: the newest matching items as an Atom 1.0 feed (RFC 4287).

The feed is a history read like ``GET /v1/items`` (same ``tags`` and ``lang``
filters, same scan budget, same grant), rendered with
:mod:`xml.etree.ElementTree`, which escapes every text and attribute. Withdrawn
versions never appear: the history reader redacts them, and withdrawal notices
themselves are not entries. An entry's ``id`` is the item's stream id, which
names one story version and never changes.

Caching: the ``ETag`` hashes the query and the ids of the entries, so a feed
reader's ``If-None-Match`` gets a 304 until something new matches. A feed read
with a token is ``Cache-Control: private``; shared caches keep only public ones.
The ``self`` link never carries the token.
"""

from __future__ import annotations

import hashlib
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from aiohttp import web

from publisher.access import require_reader
from publisher.ledger import record
from publisher.query import query_languages, query_number, query_tags
from wire.core.ledger import FEED
from wire.core.tokens import bearer
from wire.web.appkeys import SETTINGS, STORE

ATOM = "http://www.w3.org/2005/Atom"
MEDIA_TYPE = "application/atom+xml"
MAX_LIMIT = 200
DEFAULT_LIMIT = 50
#: How long a shared cache may keep a public feed (seconds).
MAX_AGE = 30
#: Characters XML 1.0 cannot carry even escaped; item text and link rules
#: forbid them (wire.core.text.NOT_XML), but a feed must stay well-formed
#: whatever it is given (an item stored before that rule, a query's tags).
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def setup_feeds(app: web.Application) -> None:
    """Add the feed route to ``app``."""
    app.router.add_get("/v1/feed.atom", atom_feed)


def feed_limit(request: web.Request) -> int:
    """``?limit=N``, 1-200, default 50."""
    limit = query_number(request, "limit", 1, MAX_LIMIT, "an integer")
    return DEFAULT_LIMIT if limit is None else limit


async def atom_feed(request: web.Request) -> web.Response:
    """The feed; 304 when ``If-None-Match`` names its current ETag."""
    grant = require_reader(request)
    tags, languages = grant.narrow(query_tags(request)), query_languages(request)
    limit = feed_limit(request)
    scan = await request.app[STORE].history_before(tags, limit, languages=languages)
    entries = [e for e in grant.visible(scan.entries) if not e.withdrawal]
    query = f"tags={','.join(sorted(tags))};lang={','.join(sorted(languages))};limit={limit}"
    etag = '"' + _digest(query + "|" + ",".join(e.id for e in entries))[:32] + '"'
    private = bearer(request.headers, request.query) is not None
    headers = {
        "ETag": etag,
        "Cache-Control": f"{'private' if private else 'public'}, max-age={MAX_AGE}",
        "Vary": "Authorization",
    }
    named = _etags(request.headers.get("If-None-Match", ""))
    if etag in named or "*" in named:
        return web.Response(status=304, headers=headers)
    agency = request.app[SETTINGS].agency
    items = [orjson.loads(e.json) for e in entries]
    # Atom's published is when the story first ran: version 1's time, where kept
    # and within the reader's grant (else this version's, as when it is trimmed).
    later = [i["guid"] for i in items if i.get("version", 1) > 1]
    firsts = await request.app[STORE].first_published(later, sees=grant.sees)
    for item in items:
        item["first_published"] = firsts.get(item["guid"], item["published_at"])
    feed = _feed(request, query, agency, items)
    record(request, grant, FEED, entries)
    body = ET.tostring(feed, encoding="utf-8", xml_declaration=True)
    return web.Response(body=body, headers=headers, content_type=MEDIA_TYPE, charset="utf-8")


def _etags(header: str) -> set[str]:
    """The entity tags an ``If-None-Match`` names (weak ones compared as strong)."""
    return {t.strip().removeprefix("W/") for t in header.split(",") if t.strip()}


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _text(value: object) -> str:
    return _NOT_XML.sub("", str(value))


def _sub(parent: ET.Element, tag: str, text: object = None, **attrs: str) -> ET.Element:
    node = ET.SubElement(parent, f"{{{ATOM}}}{tag}", {k: _text(v) for k, v in attrs.items()})
    if text is not None:
        node.text = _text(text)
    return node


def _feed(
    request: web.Request, query: str, agency: str, items: Sequence[Mapping[str, Any]]
) -> ET.Element:
    """The ``<feed>`` element: its head, then one entry per item, newest first."""
    ET.register_namespace("", ATOM)
    feed = ET.Element(f"{{{ATOM}}}feed")
    _sub(feed, "id", "urn:wire:feed:" + _digest(query)[:32])
    wanted = request.query.get("tags", "").strip()
    _sub(feed, "title", f"{agency}: {wanted}" if wanted else agency)
    # A feed with no entry yet still needs an updated: the epoch says "never".
    newest = items[0]["published_at"] if items else "1970-01-01T00:00:00Z"
    _sub(feed, "updated", newest)
    public = {k: v for k, v in request.query.items() if k != "token"}
    _sub(feed, "link", rel="self", type=MEDIA_TYPE, href=str(request.url.with_query(public)))
    desk = {k: v for k, v in public.items() if k in ("tags", "lang")}
    desk_url = request.url.with_path("/").with_query(desk)
    _sub(feed, "link", rel="alternate", type="text/html", href=str(desk_url))
    for item in items:
        _entry(feed, item, agency)
    return feed


def _entry(feed: ET.Element, item: Mapping[str, Any], agency: str) -> None:
    entry = _sub(feed, "entry")
    _sub(entry, "id", "urn:wire:item:" + item["id"])
    _sub(entry, "title", item.get("title", ""))
    _sub(entry, "published", item.get("first_published", item["published_at"]))
    _sub(entry, "updated", item["published_at"])
    _sub(_sub(entry, "author"), "name", item.get("byline") or agency)
    for tag in item.get("tags", []):
        _sub(entry, "category", term=tag)
    if item.get("url"):
        _sub(entry, "link", rel="alternate", href=item["url"])
    summary = item.get("subtitle") or item.get("summary")
    if summary:
        _sub(entry, "summary", summary, type="text")
    # Always present: an entry needs content or an alternate link (RFC 4287 4.1.2).
    _sub(entry, "content", item.get("body") or "", type="text")
