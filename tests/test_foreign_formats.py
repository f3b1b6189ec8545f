"""The wire's documents judged by parsers it did not write.

Atom by ``feedparser``, by the standard library's strict XML parser (expat)
and by Chromium's ``DOMParser``; ninjs by ``jsonschema`` against
``tests/schemas/ninjs-3.x.json``. The promise: whatever an editor typed,
either the validator refuses it or every output carries it, unchanged.
"""

from __future__ import annotations

import json
import os
import xml.dom.minidom
from pathlib import Path
from typing import Any

import aiohttp
import feedparser
import pytest
from jsonschema import Draft202012Validator

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


SCHEMA = json.loads((Path(__file__).parent / "schemas" / "ninjs-3.x.json").read_text())
NINJS = Draft202012Validator(SCHEMA, format_checker=Draft202012Validator.FORMAT_CHECKER)


def ninjs_errors(doc: object) -> list[str]:
    return [f"{list(e.absolute_path)}: {e.message}" for e in NINJS.iter_errors(doc)]


@pytest.mark.parametrize(
    "extra",
    [{"foo": 1}, {"profile": 5}, {"eventDetails": "not an object"}, {"wire:x": 1}],
    ids=["not-ninjs", "profile-not-string", "eventDetails-not-object", "wire-namespace"],
)
async def test_extra_that_ninjs_cannot_carry_is_refused(
    server: Server, http: aiohttp.ClientSession, extra: dict[str, Any]
) -> None:
    """``extra`` goes out at the top level of ninjs: a name ninjs 3.x does not
    have (and no ``prefix:name`` of another provider), or a ninjs property of
    the wrong JSON type, made every ninjs read of the item schema-invalid."""
    status, body = await post(http, server.base, item("T", [tag()], extra=extra))
    if status == 201:
        url = f"{server.base}/v1/items/{body['item']['id']}?format=ninjs"
        async with http.get(url) as resp:
            assert ninjs_errors(await resp.json()) == []
    assert status == 400, body
    assert body["error"]["field"] == "extra"


async def test_extra_that_ninjs_can_carry_reads_as_valid_ninjs(
    server: Server, http: aiohttp.ClientSession
) -> None:
    extra = {"profile": "p", "eventDetails": {"a": 1}, "acme:note": [1, {"x": None}]}
    status, body = await post(http, server.base, item("T", [tag()], extra=extra))
    assert status == 201, body
    async with http.get(f"{server.base}/v1/items/{body['item']['id']}?format=ninjs") as resp:
        doc = await resp.json(content_type=None)
    assert ninjs_errors(doc) == []
    assert {k: doc[k] for k in extra} == extra
