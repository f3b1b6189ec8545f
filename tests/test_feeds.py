"""The Atom feed (issue 14): parsed by feedparser, cached by ETag, within grants.

Every feed is read from a real server over loopback and parsed by
``feedparser``, the library most feed readers' Python tools use: ``bozo``
must stay false (well-formed XML, a valid Atom document).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import feedparser
import pytest
from multidict import CIMultiDict
from playwright.async_api import expect

from tests.conftest import Server, ServerFactory
from tests.support import EDITOR_TOKEN, chromium, own_tag, publish, sport_partner

AUTH = {"Authorization": f"Bearer {EDITOR_TOKEN}"}



async def fetch(
    http: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None
) -> tuple[int, CIMultiDict[str], bytes]:
    async with http.get(url, headers=headers or {}) as resp:
        return resp.status, CIMultiDict(resp.headers), await resp.read()


def parse(body: bytes) -> Any:
    feed = feedparser.parse(body)
    assert not feed.bozo, feed.get("bozo_exception")
    return feed


async def test_a_feed_parses_cleanly_with_entries_authors_categories_and_links(
    server: Server, http: aiohttp.ClientSession
) -> None:
    t = own_tag("feed")
    first = await publish(
        http, server.base, "First <story> & more", [t, f"{t}/sub"],
        byline="Ann Reporter", subtitle="A subtitle", body="Body text\nsecond line",
        url="https://example.com/first",
    )
    second = await publish(http, server.base, "Second", [t], summary="The summary")
    await publish(http, server.base, "Elsewhere", [own_tag("feed")])
    status, headers, body = await fetch(http, f"{server.base}/v1/feed.atom?tags={t}")
    assert status == 200
    assert headers["Content-Type"] == "application/atom+xml; charset=utf-8"
    assert headers["Cache-Control"].startswith("public, max-age=")
    feed = parse(body)
    assert feed.version == "atom10"
    assert [e.title for e in feed.entries] == ["Second", "First <story> & more"]
    newest, oldest = feed.entries
    assert feed.feed.updated == second["published_at"]
    assert feed.feed.id.startswith("urn:wire:feed:")
    assert newest.id == f"urn:wire:item:{second['id']}"
    assert oldest.id == f"urn:wire:item:{first['id']}"
    assert oldest.author == "Ann Reporter"
    assert newest.author == "wire"  # no byline: the agency
    assert oldest.summary == "A subtitle"
    assert newest.summary == "The summary"
    assert oldest.content[0].value == "Body text\nsecond line"
    assert oldest.content[0].type == "text/plain"
    assert [c.term for c in oldest.tags] == [t, f"{t}/sub"]
    assert oldest.link == "https://example.com/first"
    assert oldest.published == first["published_at"]
    assert oldest.updated == first["published_at"]
    links = {link.rel: link.href for link in feed.feed.links}
    assert links["self"] == f"{server.base}/v1/feed.atom?tags={t}"
    assert links["alternate"] == f"{server.base}/?tags={t}"


async def test_a_later_version_is_published_when_the_story_first_ran(
    server: Server, http: aiohttp.ClientSession
) -> None:
    t = own_tag("feed")
    first = await publish(http, server.base, "v1", [t], guid=f"{t}-story")
    second = await publish(http, server.base, "v2", [t], guid=f"{t}-story")
    _, _, body = await fetch(http, f"{server.base}/v1/feed.atom?tags={t}")
    entries = parse(body).entries
    assert [e.title for e in entries] == ["v2", "v1"]
    assert entries[0].id != entries[1].id
    assert entries[0].published == first["published_at"]
    assert entries[0].updated == second["published_at"]


async def test_limit_and_language_filter_and_bad_limit(
    server: Server, http: aiohttp.ClientSession
) -> None:
    t = own_tag("feed")
    for i in range(3):
        await publish(http, server.base, f"en {i}", [t], language="en")
    await publish(http, server.base, "ru", [t], language="ru")
    _, _, body = await fetch(http, f"{server.base}/v1/feed.atom?tags={t}&lang=en&limit=2")
    assert [e.title for e in parse(body).entries] == ["en 2", "en 1"]
    status, _, body = await fetch(http, f"{server.base}/v1/feed.atom?limit=201")
    assert status == 400 and b'"field":"limit"' in body


async def test_if_none_match_gives_304_until_something_new_matches(
    server: Server, http: aiohttp.ClientSession
) -> None:
    t = own_tag("feed")
    await publish(http, server.base, "One", [t])
    url = f"{server.base}/v1/feed.atom?tags={t}"
    _, headers, _ = await fetch(http, url)
    etag = headers["ETag"]
    cross = {"If-None-Match": etag, "Origin": "https://x.example"}
    status, again, body = await fetch(http, url, cross)
    assert status == 304 and body == b"" and again["ETag"] == etag
    assert again["Access-Control-Allow-Origin"] == "*"  # a read, like GET /v1/items
    status, _, _ = await fetch(http, url, {"If-None-Match": f'"other", W/{etag}'})
    assert status == 304
    await publish(http, server.base, "Elsewhere", [own_tag("feed")])  # does not match: still 304
    status, _, _ = await fetch(http, url, {"If-None-Match": etag})
    assert status == 304
    await publish(http, server.base, "Two", [t])
    status, headers, body = await fetch(http, url, {"If-None-Match": etag})
    assert status == 200 and headers["ETag"] != etag
    assert [e.title for e in parse(body).entries] == ["Two", "One"]


async def test_a_withdrawn_story_is_absent(server: Server, http: aiohttp.ClientSession) -> None:
    t = own_tag("feed")
    await publish(http, server.base, "Kept", [t], guid=f"{t}-kept")
    await publish(http, server.base, "Killed v1", [t], guid=f"{t}-killed")
    await publish(http, server.base, "Killed v2", [t], guid=f"{t}-killed")
    url = f"{server.base}/v1/stories/{t}-killed/withdraw"
    async with http.post(url, json={"reason": "Legal advice"}, headers=AUTH) as resp:
        assert resp.status == 200
    _, _, body = await fetch(http, f"{server.base}/v1/feed.atom?tags={t}")
    assert [e.title for e in parse(body).entries] == ["Kept"]


@pytest.fixture
async def limited(make_server: ServerFactory, tmp_path: Path) -> Server:
    path = sport_partner(tmp_path)
    return await make_server(entitlements=path, subscriber_tokens=("staff",))


async def test_entitlements_apply_and_the_token_is_never_echoed(
    limited: Server, http: aiohttp.ClientSession
) -> None:
    base = limited.base
    await publish(http, base, "Match report", ["sport/football"])
    await publish(http, base, "Summit", ["politics"])
    status, _, _ = await fetch(http, f"{base}/v1/feed.atom")
    assert status == 401
    status, headers, body = await fetch(http, f"{base}/v1/feed.atom?token=partner")
    assert status == 200
    assert headers["Cache-Control"].startswith("private")
    feed = parse(body)
    assert [e.title for e in feed.entries] == ["Match report"]
    assert b"partner" not in body.replace(b"Sport partner", b"")
    links = {link.rel: link.href for link in feed.feed.links}
    assert links["self"] == f"{base}/v1/feed.atom"
    status, _, body = await fetch(
        http, f"{base}/v1/feed.atom?tags=politics", {"Authorization": "Bearer partner"}
    )
    assert status == 403
    _, _, body = await fetch(http, f"{base}/v1/feed.atom", {"Authorization": "Bearer staff"})
    assert [e.title for e in parse(body).entries] == ["Summit", "Match report"]


@pytest.mark.browser
async def test_the_desk_links_the_feed_of_its_current_filter(
    server: Server, http: aiohttp.ClientSession
) -> None:
    t = own_tag("feed")
    await publish(http, server.base, "Linked", [t])
    async with chromium() as browser:
        page = await browser.new_page()
        await page.goto(f"{server.base}/?tags=world&lang=en")
        link = page.locator('link[rel="alternate"][type="application/atom+xml"]')
        await expect(link).to_have_attribute("href", "/v1/feed.atom?tags=world&lang=en")
        await page.fill("#filter", t)
        await page.press("#filter", "Enter")
        await expect(link).to_have_attribute("href", f"/v1/feed.atom?tags={t}&lang=en")
        href = await link.get_attribute("href")
    assert href is not None
    _, _, body = await fetch(http, server.base + href)
    assert [e.title for e in parse(body).entries] == ["Linked"]
