"""Issue 13 on the client side, without a server: the library's typed items,
its language filter, ``wire tail``'s lines and ``wire publish``'s JSON."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from typing import Any

import pytest

import subscriber
from subscriber import Association, Entity, Item, ProtocolError, Rendition, Subject
from subscriber.items import parse_event
from subscriber.languages import language_matches, normalize_language, normalize_languages
from wire.cli.main import build_parser
from wire.cli.publish import item_from_flags
from wire.cli.tail import Printer

WHEN = "2024-12-03T10:00:00.000Z"

MAXIMAL: dict[str, Any] = {
    "id": "1733220000000-0",
    "guid": "urn:wire:quake",
    "version": 2,
    "mark": "Corrected",
    "pubstatus": "usable",
    "published_at": WHEN,
    "urgency": 3,
    "title": "Quake hits coast",
    "subtitle": "Corrects toll",
    "tags": ["world/asia"],
    "url": "https://news.example/quake",
    "body": "Body.",
    "language": "en-GB",
    "type": "text",
    "byline": "By Aiko Tanabe",
    "slugline": "QUAKE-JAPAN",
    "located": "Tokyo",
    "summary": "A strong quake.\nNo tsunami.",
    "ednote": "Corrects toll in paragraph 2",
    "copyright": "(c) Wire",
    "usage_terms": "No archive",
    "translation_of": "urn:wire:quake-ja",
    "correction": True,
    "subjects": [{"code": "medtop:20000051", "name": "disaster and accident"}, {"code": "x:1"}],
    "people": [{"name": "Aiko Tanabe", "uri": "https://people.example/aiko"}],
    "places": [{"name": "Tokyo", "uri": "geo:1850147"}],
    "organisations": [{"name": "Agency"}],
    "associations": [
        {
            "type": "picture",
            "uri": "https://pics.example/1",
            "headline": "Rubble",
            "caption": "Rubble in the street",
            "credit": "Photo: Wire",
            "alt": "A street covered in rubble",
            "renditions": [
                {"name": "thumbnail", "href": "https://pics.example/1/t.jpg", "width": 120,
                 "height": 80, "contenttype": "image/jpeg"},
                {"name": "original", "href": "https://pics.example/1/o.jpg"},
            ],
        },
        {"type": "video", "uri": "https://pics.example/2", "renditions": [
            {"name": "original", "href": "https://pics.example/2.mp4"}]},
    ],
    "extra": {"acme:genre": [{"code": "x"}]},
}  # fmt: skip


def test_a_maximal_item_parses_into_typed_fields() -> None:
    item = parse_event(MAXIMAL)
    assert isinstance(item, Item)
    assert (item.language, item.type, item.correction) == ("en-GB", "text", True)
    assert (item.byline, item.slugline, item.located) == ("By Aiko Tanabe", "QUAKE-JAPAN", "Tokyo")
    assert item.summary == "A strong quake.\nNo tsunami."
    assert (item.ednote, item.copyright, item.usage_terms) == (
        "Corrects toll in paragraph 2",
        "(c) Wire",
        "No archive",
    )
    assert item.translation_of == "urn:wire:quake-ja"
    assert item.subjects == (Subject("medtop:20000051", "disaster and accident"), Subject("x:1"))
    assert item.people == (Entity("Aiko Tanabe", "https://people.example/aiko"),)
    assert item.places == (Entity("Tokyo", "geo:1850147"),)
    assert item.organisations == (Entity("Agency"),)
    picture = item.associations[0]
    assert picture == Association(
        "picture",
        "https://pics.example/1",
        (
            Rendition("thumbnail", "https://pics.example/1/t.jpg", 120, 80, "image/jpeg"),
            Rendition("original", "https://pics.example/1/o.jpg"),
        ),
        headline="Rubble",
        caption="Rubble in the street",
        credit="Photo: Wire",
        alt="A street covered in rubble",
    )
    assert item.pictures == (picture,) and item.associations[1].type == "video"
    assert item.extra == {"acme:genre": [{"code": "x"}]}
    assert not item.is_advisory
    hash(item)  # frozen all the way down


def test_an_item_from_an_older_server_takes_the_defaults() -> None:
    old = {k: MAXIMAL[k] for k in ("id", "guid", "version", "title", "tags", "published_at")}
    item = parse_event(old)
    assert isinstance(item, Item)
    assert (item.language, item.type, item.correction) == ("", "text", False)
    assert item.byline is None and item.associations == () and item.subjects == ()
    assert item.extra == {}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("correction", "yes"),
        ("language", 5),
        ("byline", ["x"]),
        ("subjects", {"code": "x"}),
        ("subjects", [{"name": "no code"}]),
        ("people", ["Aiko"]),
        ("associations", [{"type": "picture", "uri": "https://x", "renditions": "x"}]),
        ("associations", [{"type": "picture", "uri": "https://x",
                           "renditions": [{"name": "o", "href": "https://x", "width": "1"}]}]),
        ("extra", []),
    ],
)  # fmt: skip
def test_a_field_of_the_wrong_type_is_a_protocol_error(field: str, value: object) -> None:
    with pytest.raises(ProtocolError):
        parse_event({**MAXIMAL, field: value})


def test_language_tags_normalize_and_match_exactly_case_aside() -> None:
    assert normalize_language("EN-gb") == "en-GB"
    assert normalize_language("zh-hant-tw") == "zh-Hant-TW"
    assert normalize_language("pt-br") == "pt-BR"
    assert normalize_language("en_gb") == "en-GB"  # as the server reads it
    for bad in ("", "e", "en GB", "en--GB", 7):
        with pytest.raises(subscriber.SubscriptionError):
            normalize_language(bad)
    wanted = normalize_languages(["en", "RU"])
    assert language_matches(wanted, "ru") and language_matches(wanted, "EN")
    assert not language_matches(wanted, "en-GB")  # exact: en does not include en-GB
    assert language_matches(wanted, "")  # an older server's item: let through
    assert language_matches(frozenset(), "de")


def test_connect_sends_normalized_languages_and_filters_locally() -> None:
    feed = subscriber.connect("ws://127.0.0.1:1/v1/ws", ["world"], languages=["EN", "ru"])
    assert feed.languages == ("en", "ru")
    english = parse_event({**MAXIMAL, "language": "en"})
    german = parse_event({**MAXIMAL, "id": "1733220000001-0", "language": "de"})
    assert feed._accept(german) is None
    assert feed._accept(english) is english


def _printed(*items: dict[str, Any]) -> list[str]:
    out = io.StringIO()
    printer = Printer(out)
    for data in items:
        printer.show(parse_event(data))
    return out.getvalue().splitlines()


def test_tail_prints_dateline_byline_corrections_and_advisories() -> None:
    local = datetime(2024, 12, 3, 10, 0, tzinfo=UTC).astimezone()
    hhmm, day = local.strftime("%H:%M"), f"Dec {local.day}"
    base = {"id": "1-0", "guid": "g", "version": 1, "published_at": WHEN, "urgency": 5}
    story = {
        **base,
        "title": "Quake hits",
        "tags": ["world"],
        "located": "Tokyo",
        "byline": "Aiko Tanabe",
    }
    corrected = {**story, "id": "2-0", "version": 2, "mark": "Corrected", "correction": True}
    unmarked = {**story, "id": "3-0", "version": 3, "mark": "Updated", "correction": True}
    advisory = {
        **base,
        "id": "4-0",
        "guid": "a",
        "title": "Pictures to follow",
        "tags": ["world"],
        "type": "advisory",
    }
    plain = {**base, "id": "5-0", "guid": "p", "title": "Talks resume", "tags": ["world"]}
    assert _printed(story, corrected, unmarked, advisory, plain) == [
        f"{hhmm}   TOKYO, {day} (WIRE) - Quake hits  By Aiko Tanabe  [world]",
        f"{hhmm}   CORRECTED  TOKYO, {day} (WIRE) - Quake hits (v2)  By Aiko Tanabe  [world]",
        f"{hhmm}   CORRECTED UPDATED  TOKYO, {day} (WIRE) - Quake hits (v3)"
        "  By Aiko Tanabe  [world]",
        f"{hhmm}   [ADVISORY] Pictures to follow  [world]",
        f"{hhmm}   Talks resume  [world]",
    ]  # fmt: skip


def test_tail_paints_an_advisory_dim_and_a_correction_apart() -> None:
    out = io.StringIO()
    printer = Printer(out, color=True)
    base = {"id": "1-0", "guid": "g", "version": 1, "published_at": WHEN, "tags": ["w"]}
    printer.show(parse_event({**base, "title": "Note", "type": "advisory"}))
    printer.show(
        parse_event({**base, "id": "2-0", "version": 2, "title": "Fix", "correction": True})
    )
    advisory, correction = out.getvalue().splitlines()
    assert "\x1b[2m[ADVISORY] Note\x1b[0m" in advisory
    assert "\x1b[36mCORRECTED  Fix (v2)\x1b[0m" in correction


def test_publish_flags_build_the_item_json() -> None:
    args = build_parser().parse_args([
        "publish", "--title", "Quake hits", "--tag", "world", "--guid", "g1",
        "--byline", "By Aiko Tanabe", "--slugline", "QUAKE-JAPAN", "--located", "TOKYO",
        "--language", "en", "--summary", "Short.", "--ednote", "Note", "--copyright", "(c) W",
        "--usage-terms", "No archive", "--translation-of", "g0", "--correction", "--advisory",
        "--subject", "medtop:20000051=disaster and accident", "--subject", "medtop:1",
        "--picture", "https://pics.example/1.jpg", "--caption", "Rubble", "--credit", "Wire",
        "--alt", "A street",
    ])  # fmt: skip
    assert item_from_flags(args) == {
        "title": "Quake hits",
        "tags": ["world"],
        "guid": "g1",
        "byline": "By Aiko Tanabe",
        "slugline": "QUAKE-JAPAN",
        "located": "TOKYO",
        "language": "en",
        "summary": "Short.",
        "ednote": "Note",
        "copyright": "(c) W",
        "usage_terms": "No archive",
        "translation_of": "g0",
        "correction": True,
        "type": "advisory",
        "subjects": [
            {"code": "medtop:20000051", "name": "disaster and accident"},
            {"code": "medtop:1"},
        ],
        "associations": [
            {
                "type": "picture",
                "uri": "https://pics.example/1.jpg",
                "caption": "Rubble",
                "credit": "Wire",
                "alt": "A street",
                "renditions": [{"name": "original", "href": "https://pics.example/1.jpg"}],
            }
        ],
    }


def test_publish_without_new_flags_builds_what_it_did_before() -> None:
    args = build_parser().parse_args(["publish", "--title", "Hello", "--tag", "world"])
    assert item_from_flags(args) == {"title": "Hello", "tags": ["world"]}


def test_demo_makes_datelines_bylines_two_languages_pictures_corrections_advisories() -> None:
    import random

    from wire.cli.demo import Newsroom

    room = Newsroom(random.Random(3), "http://127.0.0.1:8080")
    items = [room.next_item() for _ in range(300)]
    assert {i.get("language") for i in items} == {"en", "ru"}
    guids = {i["guid"] for i in items if i.get("language") == "en"}
    translations = [i for i in items if i.get("translation_of")]
    assert translations and all(t["translation_of"] in guids for t in translations)
    assert any(i.get("correction") for i in items)
    assert any(i.get("type") == "advisory" for i in items)
    stories = [i for i in items if i.get("type") != "advisory"]
    assert all(i.get("located") and i.get("byline") for i in stories)
    hrefs = {a["uri"] for i in items for a in i.get("associations", [])}
    assert hrefs and all(h.startswith("http://127.0.0.1:8080/static/pictures/") for h in hrefs)
    # A correction only ever follows its story (the API refuses it for a new guid).
    published: set[str] = set()
    for sample in items:
        assert not sample.get("correction") or sample["guid"] in published
        published.add(sample["guid"])


async def test_placeholder_pictures_are_served_small_under_the_pages_policy() -> None:
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    from wire.web.pages import STATIC, setup_pages

    app = web.Application()
    setup_pages(app)
    pictures = sorted((STATIC / "pictures").glob("*.svg"))
    assert len(pictures) >= 4 and all(p.stat().st_size < 3000 for p in pictures)
    async with TestClient(TestServer(app)) as client:
        resp = await client.get(f"/static/pictures/{pictures[0].name}")
        assert resp.status == 200 and resp.headers["Content-Type"] == "image/svg+xml"
        csp = resp.headers["Content-Security-Policy"]
        assert "img-src 'self' data: http: https:" in csp and "script-src 'self'" in csp
        # NotFound (404 once the app's error middleware answers it; 500 in this bare app).
        for path in ("/static/pictures/nope.svg", "/static/pictures/..%2Fdesk.js"):
            assert (await client.get(path)).status != 200
        assert (await client.get("/static/desk.js")).status == 200
