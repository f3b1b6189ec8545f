"""Issue 13, the newsroom fields of an item: validation (pure calls) and one HTTP round trip."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson
import pytest
import websockets

from tests.conftest import Server
from tests.support import get_json, item, post, sse_items
from wire.core import ninjs
from wire.core.errors import ValidationError
from wire.core.items import CONTENT_FIELDS, Submission, parse_submission
from wire.core.language import normalize_language

PICTURE: dict[str, Any] = {
    "type": "picture",
    "uri": "https://img.example.com/quake/1",
    "headline": "Rescuers at work",
    "caption": "Rescuers search the rubble.\nTokyo, Dec 3.",
    "credit": "Jane Photographer / WIRE",
    "alt": "Rescuers in orange helmets on a collapsed building",
    "renditions": [
        {"name": "thumbnail", "href": "https://img.example.com/q-t.jpg", "width": 160,
         "height": 90, "contenttype": "image/jpeg"},
        {"name": "large", "href": "https://img.example.com/q-l.jpg"},
    ],
}  # fmt: skip
MAXIMAL: dict[str, Any] = item(
    "Quake hits Tokyo",
    ["world/asia"],
    guid="quake-ja",
    subtitle="No tsunami warning",
    body="A magnitude 6 quake.",
    url="https://example.com/quake",
    mark="Exclusive",
    urgency=2,
    language="ja",
    type="text",
    byline="By A. Reporter",
    slugline="QUAKE-JAPAN",
    located="TOKYO",
    summary="A strong quake shook Tokyo.\nNo damage reported.",
    ednote="Embargoed pictures follow.",
    copyright="(c) 2024 Wire Agency",
    usage_terms="No archiving.",
    translation_of="quake",
    subjects=[{"code": "medtop:20000051", "name": "disaster and accident"}, {"code": "wd:Q7944"}],
    people=[{"name": "Fumio Kishida", "uri": "http://www.wikidata.org/entity/Q1128389"}],
    places=[{"name": "Tokyo", "uri": "geonames:1850147"}, {"name": "Japan"}],
    organisations=[{"name": "Japan Meteorological Agency"}],
    associations=[PICTURE],
    extra={"profile": "text-photo", "acme:desk": {"shift": "night"}},
)


def parse(**fields: Any) -> Submission:
    return parse_submission({k: v for k, v in {**item(), **fields}.items() if v is not None})


def refused(**fields: Any) -> ValidationError:
    with pytest.raises(ValidationError) as err:
        parse(**fields)
    return err.value


def test_a_maximal_item_keeps_every_field_in_a_fixed_order() -> None:
    sub = parse_submission(MAXIMAL)
    content = sub.content()
    assert list(content) == [f for f in CONTENT_FIELDS if f != "correction"]
    for name in CONTENT_FIELDS:
        if name != "correction":
            assert content[name] == MAXIMAL[name], name
    assert sub.subjects[0].code == "medtop:20000051" and sub.associations[0].renditions[0].width
    assert {k: v for k, v in sub.pending().items() if k in content} == content


def test_defaults_language_and_type_are_always_there() -> None:
    assert parse().content() == {"language": "en", "type": "text"}
    assert parse_submission(item(), default_language="pt-br").language == "pt-BR"
    assert parse(language="RU").language == "ru"
    assert parse(type="advisory").content()["type"] == "advisory"
    # Empty optional text is absent, as for subtitle and body.
    assert parse(byline="  ", summary="").content() == {"language": "en", "type": "text"}


@pytest.mark.parametrize(
    ("raw", "tag"),
    [("en", "en"), ("EN-gb", "en-GB"), ("pt_br", "pt-BR"), ("zh-hant-tw", "zh-Hant-TW"),
     ("SR-LATN", "sr-Latn"), ("es-419", "es-419"), ("de-CH-1901", "de-CH-1901"),
     ("en-US-x-Twain", "en-US-x-twain"), ("zh-yue-HK", "zh-yue-HK")],
)  # fmt: skip
def test_bcp47_tags_are_normalized(raw: str, tag: str) -> None:
    assert normalize_language(raw) == tag
    assert parse(language=raw).language == tag


@pytest.mark.parametrize("bad", ["", "e", "english1", "en-", "en--us", "12", "en-US-US", "fr!", 5])
def test_bad_languages_are_refused(bad: object) -> None:
    err = refused(language=bad)
    assert err.field == "language" and "BCP 47" in err.message


def test_correction_defaults_the_mark_to_corrected() -> None:
    assert parse(correction=True).mark == "Corrected"
    assert parse(correction=True, mark="Fixed").mark == "Fixed"
    assert parse(correction=False).mark is None and "correction" not in parse().content()
    assert parse(correction=True).content()["correction"] is True


BAD: list[tuple[dict[str, Any], str, str]] = [
    ({"byline": "x" * 201}, "byline", "200"),
    ({"byline": "a\nb"}, "byline", "control"),
    ({"slugline": "QUAKE JAPAN"}, "slugline", "letters, digits"),
    ({"slugline": "Q" * 65}, "slugline", "64"),
    ({"slugline": "-QUAKE"}, "slugline", "letters"),
    ({"located": "x" * 101}, "located", "100"),
    ({"summary": "x" * 2001}, "summary", "2,000"),
    ({"summary": "a\x00b"}, "summary", "control"),
    ({"ednote": "x" * 1001}, "ednote", "1,000"),
    ({"copyright": "x" * 501}, "copyright", "500"),
    ({"usage_terms": "x" * 501}, "usage_terms", "500"),
    ({"usage_terms": 5}, "usage_terms", "string"),
    ({"type": "story"}, "type", "text or advisory"),
    ({"correction": "yes"}, "correction", "true or false"),
    ({"translation_of": "a b"}, "translation_of", "1-200"),
    ({"translation_of": "g", "guid": "g"}, "translation_of", "another story"),
    ({"subjects": "medtop:1"}, "subjects", "list of objects"),
    ({"subjects": [{"code": "x"}] * 21}, "subjects", "at most 20"),
    ({"subjects": [{"name": "no code"}]}, "subjects[0].code", "scheme:code"),
    ({"subjects": [{"code": "medtop 1"}]}, "subjects[0].code", "scheme:code"),
    ({"subjects": [{"code": "a:1"}, {"code": "ftp://x"}]}, "subjects[1].code", "scheme:code"),
    ({"subjects": [{"code": "http://a b"}]}, "subjects[0].code", "http(s) link"),
    ({"subjects": [{"code": "a:1", "name": "x\u202e"}]}, "subjects[0].name", "bidirectional"),
    ({"subjects": [{"code": "a:1", "uri": "a:2"}]}, "subjects[0].uri", "unknown field"),
    ({"people": [{"uri": "wd:Q1"}]}, "people[0].name", "required"),
    ({"places": [{"name": "X", "uri": "javascript:alert(1)"}]}, "places[0].uri", "scheme:code"),
    ({"organisations": [{"name": "X"}] * 21}, "organisations", "at most 20"),
    ({"organisations": [{"name": "X", "uri": "https://a..b/"}]}, "organisations[0].uri", "link"),
    ({"associations": [PICTURE] * 11}, "associations", "at most 10"),
    ({"associations": [{**PICTURE, "type": "text"}]}, "associations[0].type", "picture"),
    ({"associations": [{**PICTURE, "uri": None}]}, "associations[0].uri", "required"),
    ({"associations": [{**PICTURE, "uri": "ftp://x/y"}]}, "associations[0].uri", "http(s)"),
    ({"associations": [{**PICTURE, "renditions": []}]}, "associations[0].renditions", "1 to 10"),
    ({"associations": [{**PICTURE, "caption": "x" * 2001}]}, "associations[0].caption", "2,000"),
    ({"associations": [{**PICTURE, "alt": "a\nb"}]}, "associations[0].alt", "control"),
    ({"associations": [{**PICTURE, "credit": "x" * 201}]}, "associations[0].credit", "200"),
    ({"associations": [{**PICTURE, "headline": 1}]}, "associations[0].headline", "string"),
    ({"associations": [{**PICTURE, "size": 1}]}, "associations[0].size", "unknown"),
    (
        {"associations": [{**PICTURE, "renditions": [{"name": "a"}]}]},
        "associations[0].renditions[0].href",
        "required",
    ),
    (
        {"associations": [{**PICTURE, "renditions": [PICTURE["renditions"][0], {"name": "b",
         "href": "javascript:alert(1)"}]}]},
        "associations[0].renditions[1].href",
        "http(s)",
    ),
    (
        {"associations": [{**PICTURE, "renditions": [{"name": "a", "href": "https://x.y/",
         "width": 0}]}]},
        "associations[0].renditions[0].width",
        "1 to",
    ),
    (
        {"associations": [{**PICTURE, "renditions": [{"name": "a", "href": "https://x.y/",
         "contenttype": "jpeg"}]}]},
        "associations[0].renditions[0].contenttype",
        "media type",
    ),
    ({"extra": [1]}, "extra", "object"),
    ({"extra": {"a b": 1}}, "extra", "property name"),
    ({"extra": {"acme:blob": "x" * 17_000}}, "extra", "16,384"),
]  # fmt: skip


@pytest.mark.parametrize(("fields", "field", "hint"), BAD)
def test_each_bad_field_is_named(fields: dict[str, Any], field: str, hint: str) -> None:
    err = refused(**fields)
    assert err.field == field and hint in err.message, (err.field, err.message)


def test_good_values_at_the_limits_are_accepted() -> None:
    sub = parse(
        byline="x" * 200,
        slugline="Q" * 64,
        located="ÉVRY-COURCOURONNES",
        subjects=[{"code": f"medtop:{n:08}"} for n in range(20)],
        people=[{"name": "P", "uri": "https://example.com/p"}] * 20,
        associations=[{**PICTURE, "renditions": PICTURE["renditions"] * 5}] * 10,
        extra={"acme:k": "x" * 16_000},
    )
    assert len(sub.subjects) == 20 and len(sub.associations[9].renditions) == 10
    assert parse(slugline="Météo-Paris-2").slugline == "Météo-Paris-2"
    assert parse(subjects=[{"code": "https://cv.example.com/s/1"}]).subjects[0].code.startswith("h")
    assert parse(summary="a\r\nb").summary == "a\nb"


async def test_a_maximal_item_reads_back_with_every_field(
    server: Server, http: aiohttp.ClientSession
) -> None:
    status, body = await post(http, server.base, MAXIMAL)
    assert status == 201, body
    _, read = await get_json(http, f"{server.base}/v1/items/{body['item']['id']}")
    stored = read["item"]
    assert stored == body["item"]
    for name in CONTENT_FIELDS:
        if name != "correction":
            assert stored[name] == MAXIMAL[name], name
    assert stored["mark"] == "Exclusive" and stored["title"] == "Quake hits Tokyo"


async def test_a_maximal_item_travels_whole_through_every_channel_and_ninjs(
    server: Server, http: aiohttp.ClientSession
) -> None:
    """POST -> stream -> WebSocket, SSE and history are the same JSON; ninjs out
    -> ninjs in gives back the same item (every newsroom field kept)."""
    async with (
        websockets.connect(server.ws + "?tags=world&lang=ja") as ws,
        http.get(f"{server.base}/v1/sse?tags=world&lang=ja") as sse,
    ):
        assert orjson.loads(await ws.recv())["type"] == "subscribed"
        status, body = await post(http, server.base, MAXIMAL)
        assert status == 201, body
        stored = body["item"]
        live = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
        assert live == {"type": "item", "item": stored}
        assert await sse_items(sse, 1) == [stored]
    _, history = await get_json(http, f"{server.base}/v1/items?tags=world&lang=ja")
    assert history["items"] == [stored]
    _, doc = await get_json(http, f"{server.base}/v1/items/{stored['id']}?format=ninjs")
    assert ninjs.parse_ninjs(doc) == parse_submission(MAXIMAL)
