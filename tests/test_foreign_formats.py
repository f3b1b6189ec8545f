"""The wire's documents judged by parsers it did not write.

Atom by ``feedparser``, by the standard library's strict XML parser (expat)
and by Chromium's ``DOMParser``; ninjs by ``jsonschema`` against
``tests/schemas/ninjs-3.x.json``. The promise: whatever an editor typed,
either the validator refuses it or every output carries it, unchanged.
"""

from __future__ import annotations

import os
import xml.dom.minidom
from typing import Any

import aiohttp
import feedparser
import pytest

from tests.conftest import Server
from tests.support import item, post


def tag() -> str:
    """A tag of this test's own, so other tests' items never match."""
    return "foreign-" + os.urandom(4).hex()


async def atom(http: aiohttp.ClientSession, url: str) -> Any:
    """The feed at ``url``, well-formed to expat and clean to feedparser."""
    async with http.get(url) as resp:
        assert resp.status == 200
        body = await resp.read()
    xml.dom.minidom.parseString(body)  # expat: raises on anything not XML 1.0
    feed = feedparser.parse(body)
    assert not feed.bozo, feed.get("bozo_exception")
    return feed


@pytest.mark.parametrize("field", ["title", "body", "byline", "summary", "url"])
@pytest.mark.parametrize("char", ["\ufffe", "\uffff"])
async def test_a_character_xml_cannot_carry_is_refused_not_dropped_from_the_feed(
    server: Server, http: aiohttp.ClientSession, field: str, char: str
) -> None:
    """XML 1.0 has no U+FFFE or U+FFFF, even as a character reference: the
    feed dropped them while JSON, ninjs and SSE kept them, so the same item
    read differently (a link in the feed pointed elsewhere). They are refused."""
    t = tag()
    value = f"https://example.com/a{char}b" if field == "url" else f"a{char}b"
    sent: dict[str, Any] = {**item("T", [t]), field: value}
    status, body = await post(http, server.base, sent)
    if status == 201:  # accepted: then every output must carry it as sent
        entry = (await atom(http, f"{server.base}/v1/feed.atom?tags={t}")).entries[0]
        shown = {"title": entry.title, "body": entry.content[0].value, "byline": entry.author,
                 "summary": entry.get("summary"), "url": entry.get("link")}  # fmt: skip
        assert shown[field] == value, (field, shown[field])
    assert status == 400, body
    assert body["error"]["field"] == field
