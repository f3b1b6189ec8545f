"""Issue 13 on the pages: dateline, byline, thumbnail, story view, language filter, advisories.

Written against the field contract (docs/protocol.md, issue 13); the items
are published through ``POST /v1/items`` with every new field.
"""

from __future__ import annotations

import re
from typing import Any

import aiohttp
import pytest
from playwright.async_api import expect

from tests.conftest import Server
from tests.support import post
from tests.test_browser import Browsing, browser, browsing, http, make_server, server, story

__all__ = ["browser", "browsing", "http", "make_server", "server"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.asyncio(loop_scope="module"),
]


def maximal(server: Server, **fields: object) -> dict[str, object]:
    picture = server.base + "/static/pictures/coast.svg"
    return {
        "title": "Quake hits coast",
        "tags": ["world/asia"],
        "language": "en",
        "byline": "By Aiko Tanabe",
        "located": "TOKYO",
        "summary": "A strong quake struck off the coast.",
        "body": "First paragraph.\n\nSecond paragraph.",
        "url": "https://news.example/quake",
        "subjects": [{"code": "medtop:20000051", "name": "disaster and accident"}],
        "associations": [
            {
                "type": "picture",
                "uri": picture,
                "caption": "The coast after the quake",
                "credit": "WIRE demo",
                "alt": "A drawn coast",
                "renditions": [{"name": "original", "href": picture}],
            }
        ],
        **fields,
    }


async def publish(
    http: aiohttp.ClientSession, server: Server, body: dict[str, object]
) -> dict[str, Any]:
    status, answer = await post(http, server.base, body)
    assert status == 201, answer
    stored: dict[str, Any] = answer["item"]
    return stored


async def test_the_desk_shows_dateline_byline_thumbnail_and_the_story(
    browsing: Browsing, server: Server, http: aiohttp.ClientSession
) -> None:
    desk = await browsing.desk(server)
    first = await publish(http, server, maximal(server))
    await publish(
        http, server,
        maximal(server, guid=first["guid"], correction=True, title="Quake hits coast, 3 hurt"),
    )  # fmt: skip
    row = story(desk, "Quake hits coast, 3 hurt")
    dateline = re.compile(r"^TOKYO, [A-Z][a-z]{2} \d{1,2} \(WIRE\) -$")
    await expect(row.locator(".dateline")).to_have_text(dateline, timeout=5000)
    await expect(row.locator(".byline")).to_have_text("By Aiko Tanabe")
    await expect(row.locator(".mark")).to_have_text("Corrected")
    thumb = row.locator("img.thumb")
    await expect(thumb).to_have_attribute("alt", "A drawn coast")
    await expect(thumb).to_have_attribute("loading", "lazy")
    await expect(thumb).to_have_attribute("referrerpolicy", "no-referrer")
    await expect(row.locator(".lang-badge")).to_have_count(0)  # English on an English page

    await row.locator(".byline").click()
    panel = desk.locator("#story")
    await expect(panel).to_be_visible()
    await expect(panel.locator("#story-title")).to_have_text("Quake hits coast, 3 hurt")
    await expect(panel.locator("#story-summary")).to_have_text(
        "A strong quake struck off the coast."
    )
    await expect(panel.locator("#story-body p")).to_have_count(2)
    await expect(panel.locator("figcaption")).to_have_text(
        "The coast after the quake · Credit: WIRE demo"
    )
    await expect(panel.locator(".story-version")).to_have_count(2)
    await expect(panel.locator(".story-version").nth(1)).to_contain_text("Corrected")
    await expect(panel.locator("a.read-more")).to_have_attribute(
        "href", "https://news.example/quake"
    )


async def test_translations_link_both_ways_and_the_language_filter_lives_in_the_url(
    browsing: Browsing, server: Server, http: aiohttp.ClientSession
) -> None:
    english = await publish(http, server, maximal(server))
    await publish(
        http, server,
        maximal(server, title="Землетрясение у побережья", language="ru",
                translation_of=english["guid"]),
    )  # fmt: skip
    desk = await browsing.desk(server, "?tags=world&lang=ru")
    await expect(desk.locator("#lang")).to_have_value("ru")
    await expect(story(desk, "Землетрясение у побережья")).to_have_count(1)
    await expect(story(desk, "Quake hits coast")).to_have_count(0)

    await desk.fill("#lang", "en, ru")
    await desk.press("#lang", "Enter")
    await expect(desk).to_have_url(server.base + "/?tags=world&lang=en,ru")
    russian = story(desk, "Землетрясение у побережья")
    await expect(russian.locator(".lang-badge")).to_have_text("ru")
    await russian.locator(".byline").click()
    await desk.locator("#story-translations a", has_text="Original").click()
    await expect(desk.locator("#story-title")).to_have_text("Quake hits coast")
    await expect(desk.locator("#story-translations a")).to_have_text(["ru"])


async def test_an_advisory_looks_different_from_a_story(
    browsing: Browsing, server: Server, http: aiohttp.ClientSession
) -> None:
    desk = await browsing.desk(server)
    await publish(
        http, server, {"title": "Pictures to follow", "tags": ["world"], "type": "advisory"}
    )
    await publish(http, server, {"title": "Talks resume", "tags": ["world"]})
    advisory = story(desk, "Pictures to follow")
    await expect(advisory).to_have_class("item advisory")
    await expect(advisory.locator(".flag")).to_have_text("Advisory")
    plain = story(desk, "Talks resume")
    await expect(plain.locator(".flag")).to_have_count(0)
    look = "getComputedStyle(el).backgroundColor"
    assert await advisory.evaluate(f"el => {look}") != await plain.evaluate(f"el => {look}")


async def test_the_editor_publishes_the_new_fields_and_shows_picture_errors_inline(
    browsing: Browsing, server: Server
) -> None:
    editor = await browsing.editor(server)
    await editor.fill("#title", "Quake hits coast")
    await editor.fill("#tags", "world")
    await editor.fill("#byline", "By Aiko Tanabe")
    await editor.fill("#located", "TOKYO")
    await editor.fill("#picture", "javascript:alert(1)")
    await editor.click("#submit")
    await expect(editor.locator("#picture-error")).to_be_visible(timeout=5000)
    await editor.fill("#picture", server.base + "/static/pictures/coast.svg")
    await editor.fill("#alt", "A drawn coast")
    await editor.click("#submit")
    await expect(editor.locator("#form-status")).to_contain_text("Published", timeout=5000)
    desk = await browsing.desk(server)
    row = story(desk, "Quake hits coast")
    await expect(row.locator(".byline")).to_have_text("By Aiko Tanabe")
    await expect(row.locator("img.thumb")).to_have_attribute("alt", "A drawn coast")
