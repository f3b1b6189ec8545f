"""The wire's documents judged by parsers it did not write.

Atom by ``feedparser``, by the standard library's strict XML parser (expat)
and by Chromium's ``DOMParser``; ninjs by ``jsonschema`` against
``tests/schemas/ninjs-3.x.json``. The promise: whatever an editor typed,
either the validator refuses it or every output carries it, unchanged.
"""

from __future__ import annotations

import json
import xml.dom.minidom
from pathlib import Path
from typing import Any

import aiohttp
import feedparser
import pytest
from jsonschema import Draft202012Validator

from tests.conftest import Server
from tests.support import chromium, item, own_tag, post


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
    t = own_tag("foreign")
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
    status, body = await post(http, server.base, item("T", [own_tag("foreign")], extra=extra))
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
    status, body = await post(http, server.base, item("T", [own_tag("foreign")], extra=extra))
    assert status == 201, body
    async with http.get(f"{server.base}/v1/items/{body['item']['id']}?format=ninjs") as resp:
        doc = await resp.json(content_type=None)
    assert ninjs_errors(doc) == []
    assert {k: doc[k] for k in extra} == extra


#: Item text with every character class an item may carry (titles are one
#: line: no U+2028/U+2029 there; body and subtitle take newlines, tabs and line
#: separators, body also bidi controls), markup that XML and SSE must escape or
#: ignore, and text at the length limits. test_foreign_sse.py sends them too.
HOSTILE_TITLES = [
    'Ünïcödé — 日本語 — Straße — ΟΔΟΣ — हिन्दी — Tiếng Việt',
    "עברית\u200f and العربية\u200e\u061c mixed, 🦄👩‍👩‍👧‍👦🇺🇦 \U0010fffd \ufdd0 \U0001fffe",
    "\"quotes\" 'single' \\back\\slash\\ \\n \\u2028 </title> &amp; ]]> <![CDATA[ x ]]>",
    "zero\u200bwidth\u200djoiner\ufeffbom\u00a0nbsp\u3000ideographic",
    "data: forged\\nid: 1-0 event: item retry: 1 : comment",
    "🦄" * 300,  # at the limit, astral: 1,200 UTF-8 bytes
]
HOSTILE_BODIES = [
    "line one\nline two\n\ttabbed\u2028after LS\u2029after PS\n\nblank above",
    "\u202eright-to-left override\u202c \u2067isolate\u2069 \u202aembed\u202c (body only)",
    "id: 1-0\nevent: item\ndata: {\"forged\": true}\n\n: comment\nretry: 1",
    "<entry><title>x</title></entry> & &amp; &#0; &#xFFFE; ]]> <?pi?> <!-- c -->",
    "\\r is text, not a carriage return; \\\\ \\\" \"\"\"",
    ("Lorem ipsum dolor 🦄 ש العربية \u2028" * 4000)[:99_999] + ".",  # at the limit
]

SUBTITLE = "two\nlines\u2028LS\u2029PS \"q\" \\ 🦄 עברית\u200f </summary>"
BYLINE = "\"Ann\" O'Brien <ann@example.com> & Co — עברית\u200f 🦄"
URL = "https://例え.jp/über/x?q=\"a\"&b=<c>'d'&amp;#frag🦄"


def hostile_items(tag: str, word: str) -> list[dict[str, Any]]:
    """One item per hostile title, each with a hostile body, subtitle, byline and link."""
    more = {"subtitle": SUBTITLE, "byline": BYLINE, "url": URL}
    return [
        item(f"{word} {n} {title}"[:300], [tag], body=body, **more)
        for n, (title, body) in enumerate(zip(HOSTILE_TITLES, HOSTILE_BODIES, strict=True))
    ]


READ_FEED = """async (url) => {
  const text = await (await fetch(url)).text();
  const doc = new DOMParser().parseFromString(text, "application/xml");
  const errors = [...doc.getElementsByTagName("parsererror")].map((e) => e.textContent);
  const ns = "http://www.w3.org/2005/Atom";
  const read = (entry, name) => entry.getElementsByTagNameNS(ns, name)[0]?.textContent ?? null;
  const entries = [...doc.getElementsByTagNameNS(ns, "entry")].map((entry) => ({
    title: read(entry, "title"), summary: read(entry, "summary"), content: read(entry, "content"),
    author: read(entry, "name"),
    url: entry.getElementsByTagNameNS(ns, "link")[0]?.getAttribute("href") ?? null,
  }));
  return {errors, root: doc.documentElement.namespaceURI, entries};
}"""


async def test_chromium_parses_the_feed_and_reads_every_hostile_title_back(
    server: Server, http: aiohttp.ClientSession
) -> None:
    """Chromium's XML parser (``DOMParser``, ``application/xml``), as a page or
    extension would read the feed: well-formed, and every entry's text exact."""
    t = own_tag("foreign")
    sent = hostile_items(t, "Atom")
    stored = []
    for body in sent:
        status, answer = await post(http, server.base, body)
        assert status == 201, answer
        stored.append(answer["item"])
    fields = ("title", "subtitle", "body", "byline", "url")
    assert [[s[f] for f in fields] for s in stored] == [[b[f] for f in fields] for b in sent]
    async with chromium() as browser:
        page = await browser.new_page()
        await page.goto(server.base + "/healthz")
        got = await page.evaluate(READ_FEED, f"/v1/feed.atom?tags={t}")
    assert got["errors"] == [] and got["root"] == "http://www.w3.org/2005/Atom", got["errors"]
    names = {"title": "title", "summary": "subtitle", "content": "body", "author": "byline"}
    expected = [
        {**{atom: s[field] for atom, field in names.items()}, "url": s["url"]}
        for s in reversed(stored)  # newest first
    ]
    assert got["entries"] == expected
