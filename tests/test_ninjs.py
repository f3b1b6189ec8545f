"""IPTC ninjs 3.x interchange: rendering, ingest, the HTTP reads and ``wire export``.

Every ninjs document the wire produces here is validated against
``tests/schemas/ninjs-3.x.json``, the wire's own transcription of the ninjs 3.x
structure for the properties it emits.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import aiohttp
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from tests.conftest import Server
from tests.support import EDITOR_TOKEN, ROOT, get_json, item, post
from wire.core import ninjs
from wire.core.errors import ValidationError
from wire.core.items import parse_submission

SCHEMA = json.loads((Path(__file__).parent / "schemas" / "ninjs-3.x.json").read_text())
VALIDATOR = Draft202012Validator(SCHEMA, format_checker=Draft202012Validator.FORMAT_CHECKER)
NINJS = "application/vnd.iptc.ninjs+json"
AUTH = {"Authorization": f"Bearer {EDITOR_TOKEN}"}
NOW = "2024-06-01T12:00:00.000Z"


def assert_valid(doc: object) -> None:
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in VALIDATOR.iter_errors(doc)]
    assert not errors, errors


def stored(**extra: Any) -> dict[str, Any]:
    """Stored item JSON as the store returns it."""
    base = {
        "id": "1717243200000-0",
        "guid": "urn:wire:0123456789abcdef01234567",
        "version": 1,
        "mark": None,
        "pubstatus": "usable",
        "published_at": NOW,
        "urgency": 5,
        "title": "Headline",
        "subtitle": None,
        "tags": ["world"],
        "url": None,
        "body": None,
    }
    return {**base, **extra}


def a_ninjs_doc(**extra: Any) -> dict[str, Any]:
    """What a newsroom system sends: ninjs with properties the wire does not model."""
    doc = {
        "uri": "urn:newsml:example.com:20240601:quake",
        "type": "text",
        "version": "7",
        "versionCreated": "2024-06-01T10:00:00Z",
        "language": "en",
        "by": "A. Reporter",
        "people": [{"name": "Someone", "rel": "about"}],
        "acme:desk": "foreign",
        "urgency": 2,
        "headlines": [
            {"role": "main", "value": "Quake hits the coast"},
            {"role": "subhead", "value": "No tsunami warning"},
            {"role": "short", "value": "Quake"},
        ],
        "bodies": [
            {"role": "richtext", "contentType": "text/html", "value": "<p>ignored</p>"},
            {"role": "main", "contentType": "text/plain", "value": "A magnitude 6 quake.\n\nMore."},
        ],
        "subjects": [
            {"name": "World", "uri": "wire:tag:world"},
            {"name": "Asia", "uri": "wire:tag:world/asia"},
            {"name": "disaster", "uri": "http://cv.iptc.org/newscodes/mediatopic/03000000"},
        ],
        "renditions": [
            {
                "name": "thumbnail",
                "href": "https://img.example.com/q.jpg",
                "contentType": "image/jpeg",
            },
            {"name": "web", "href": "https://example.com/quake", "contentType": "text/html"},
        ],
        "wire:mark": "Breaking",
    }
    return {**doc, **extra}


# -- rendering (pure) -------------------------------------------------------------


def test_item_renders_as_ninjs_3() -> None:
    item_json = stored(
        version=3,
        guid="quake-1",
        mark="Updated",
        urgency=2,
        subtitle="Sub",
        body="Body text",
        url="https://example.com/a",
        tags=["world", "world/asia"],
    )
    doc = ninjs.to_ninjs(item_json, "2024-06-01T11:00:00.000Z")
    assert doc == {
        "uri": "urn:wire:story:quake-1",
        "type": "text",
        "version": "3",
        "versionCreated": NOW,
        "firstCreated": "2024-06-01T11:00:00.000Z",
        "pubStatus": "usable",
        "urgency": 2,
        "headlines": [{"role": "main", "value": "Headline"}, {"role": "subhead", "value": "Sub"}],
        "bodies": [{"role": "main", "contentType": "text/plain", "value": "Body text"}],
        "renditions": [
            {"name": "web", "href": "https://example.com/a", "contentType": "text/html"}
        ],
        "genres": [{"name": "Updated", "uri": "wire:mark:Updated"}],  # issue 13: no wire:mark
        "subjects": [
            {"name": "world", "uri": "wire:tag:world"},
            {"name": "world/asia", "uri": "wire:tag:world/asia"},
        ],
        "altIds": [{"role": "wire:id", "value": "1717243200000-0"}],
    }
    assert_valid(doc)
    minimal = ninjs.to_ninjs(stored())
    assert minimal["uri"] == "urn:wire:0123456789abcdef01234567"  # already a URI: kept
    assert "firstCreated" not in minimal and "wire:mark" not in minimal
    assert "bodies" not in minimal and "renditions" not in minimal
    assert_valid(minimal)


def test_canceled_items_never_carry_text() -> None:
    withdrawal = {
        "id": "1717243200001-0",
        "guid": "kill-me",
        "version": 3,
        "pubstatus": "canceled",
        "published_at": NOW,
        "reason": "Legal advice",
        "tags": ["politics"],
    }
    doc = ninjs.to_ninjs(withdrawal, NOW)
    assert doc["pubStatus"] == "canceled" and doc["edNote"] == "Legal advice"
    assert doc["version"] == "3" and doc["subjects"][0]["name"] == "politics"
    assert_valid(doc)
    # Even content that reached it by mistake stays out.
    leaky = ninjs.to_ninjs(stored(pubstatus="canceled", body="secret", url="https://x.example"))
    assert not {"headlines", "bodies", "renditions", "urgency"} & leaky.keys()
    assert_valid(leaky)


def test_pending_embargoed_item_renders_withheld() -> None:
    due = datetime.now(UTC) + timedelta(hours=2)
    sub = parse_submission(item("Rates", ["markets"], embargo_until=due.isoformat()))
    doc = ninjs.to_ninjs(sub.pending())
    assert doc["pubStatus"] == "withheld" and doc["embargoedUntil"].endswith("Z")
    assert "version" not in doc and "versionCreated" not in doc
    assert_valid(doc)


def test_the_schema_is_a_real_check() -> None:
    Draft202012Validator.check_schema(SCHEMA)
    assert "own transcription" in SCHEMA["description"]
    good = ninjs.to_ninjs(stored())
    assert not list(VALIDATOR.iter_errors({**good, "acme:desk": {"any": "thing"}}))
    for bad in (
        {"type": "text"},  # no uri
        {**good, "uri": "not a uri"},
        {**good, "version": 1},  # a string in ninjs
        {**good, "published_at": NOW},  # a wire field leaking through
        {**good, "pubStatus": "killed"},
        {**good, "urgency": 0},
        {**good, "versionCreated": "yesterday"},
        {**good, "headlines": [{"role": "main"}]},
        {**good, "wire:other": 1},  # the wire's namespace is described in full
        {**good, "wire:mark": ""},
        {**good, "renditions": [{"href": "https://example.com"}]},
    ):
        assert list(VALIDATOR.iter_errors(bad)), bad


_GUID_CHARS = "ABCXYZabcxyz0189._~:@+=-"


@given(st.text(alphabet=_GUID_CHARS, min_size=1, max_size=60))
def test_guid_and_uri_map_back_and_forth(guid: str) -> None:
    uri = ninjs.uri_for(guid)
    assert not list(VALIDATOR.iter_errors({"uri": uri}))
    if not guid.startswith(ninjs.STORY_PREFIX):  # the one documented collision
        assert ninjs.guid_for(uri) == guid
    assert ninjs.uri_for(ninjs.guid_for(uri)) == uri


def test_uris_that_are_not_guids_get_a_stable_guid() -> None:
    uri = "http://ninjs.example.com/newsitems/20130709simp123"
    guid = ninjs.guid_for(uri)
    assert guid.startswith("urn:wire:ninjs:") and guid == ninjs.guid_for(uri)
    assert parse_submission(item(guid=guid)).guid == guid
    assert ninjs.guid_for("urn:newsml:example.com:1:a") == "urn:newsml:example.com:1:a"


@given(st.text(min_size=1, max_size=30))
def test_every_accepted_url_and_tag_gives_schema_valid_uris(text: str) -> None:
    for fields in ({"tags": [text]}, {"url": "https://example.com/" + text}):
        try:
            sub = parse_submission(item(**fields))
        except ValidationError:
            continue
        doc = ninjs.to_ninjs(stored(tags=list(sub.tags), url=sub.url))
        assert_valid(doc)
        assert ninjs.from_ninjs(doc)["tags"] == list(sub.tags)


# -- ingest (pure) ------------------------------------------------------------------


def test_ninjs_in_maps_to_a_submission_and_ignores_what_the_wire_does_not_model() -> None:
    assert ninjs.from_ninjs(a_ninjs_doc()) == {
        "guid": "urn:newsml:example.com:20240601:quake",
        "title": "Quake hits the coast",
        "subtitle": "No tsunami warning",
        "body": "A magnitude 6 quake.\n\nMore.",
        "tags": ["world", "world/asia"],
        "url": "https://example.com/quake",
        "urgency": 2,
        "mark": "Breaking",
    }
    # Without wire:tag subjects, subject names that are valid tags are used;
    # a role-less headline is the main one; an HTML body becomes text.
    sub = ninjs.parse_ninjs(
        {
            "headlines": [{"value": "Plain"}],
            "bodies": [
                {
                    "contentType": "text/html",
                    "value": "<p>One &amp; two</p><p>Three<br>four</p><script>x()</script>",
                }
            ],
            "subjects": [{"name": "Sport"}, {"name": "economy, business and finance"}],
        }
    )
    assert sub.title == "Plain" and sub.tags == ("sport",)
    assert sub.body == "One & two\n\nThree\nfour"
    assert sub.guid.startswith("urn:wire:")  # no uri: the wire assigns one


class BadDoc(NamedTuple):
    """A ninjs document the parser must refuse, naming ``field`` with ``hint`` in its message."""

    doc: dict[str, Any]
    field: str
    hint: str


BAD_DOCS = [
    BadDoc({"subjects": [{"name": "world"}]}, "headlines", "main headline"),
    BadDoc(
        {"headlines": [{"role": "main", "value": "x" * 301}], "subjects": [{"name": "w"}]},
        "headlines",
        "longer than",
    ),
    BadDoc({"headlines": "Quake", "subjects": [{"name": "world"}]}, "headlines", "array"),
    BadDoc({"headlines": [{"value": "Quake"}]}, "subjects", "required: 1 to 20 subjects"),
    BadDoc(
        a_ninjs_doc(subjects=[{"name": f"t{n}"} for n in range(21)]), "subjects", "20 subjects"
    ),
    BadDoc({"headlines": [{"value": "Q"}], "subjects": [{"name": "a.b"}]}, "subjects", "'a.b'"),
    BadDoc(
        {"headlines": [{"value": "Q"}], "subjects": [{"uri": "wire:tag:a..b"}]}, "subjects", "a..b"
    ),
    BadDoc(a_ninjs_doc(urgency=12), "urgency", "1 (flash) to 9"),
    BadDoc(a_ninjs_doc(uri="not a uri"), "uri", "absolute URI"),
    BadDoc(a_ninjs_doc(pubStatus="canceled"), "pubStatus", "withdraw"),
    BadDoc(a_ninjs_doc(pubStatus="withheld"), "pubStatus", "embargoedUntil"),
    BadDoc(a_ninjs_doc(renditions=[{"name": "web", "href": "ftp://x"}]), "renditions", "http"),
    BadDoc(a_ninjs_doc(embargoedUntil="tomorrow"), "embargoedUntil", "ISO 8601"),
    BadDoc(a_ninjs_doc(**{"wire:mark": 5}), "wire:mark", "string"),
    BadDoc(a_ninjs_doc(**{"wire:marc": "x"}), "wire:marc", "unknown"),
    BadDoc(a_ninjs_doc(bodies=[{"value": 5}]), "bodies", "string"),
]


@pytest.mark.parametrize(
    ("doc", "field", "hint"), BAD_DOCS, ids=[f"{c.field}: {c.hint}" for c in BAD_DOCS]
)
def test_bad_ninjs_names_the_ninjs_property(doc: dict[str, Any], field: str, hint: str) -> None:
    with pytest.raises(ValidationError) as err:
        ninjs.parse_ninjs(doc)
    assert err.value.field == field and hint in err.value.message, err.value.message


# -- HTTP -------------------------------------------------------------------------


async def get_ninjs(http: aiohttp.ClientSession, url: str) -> tuple[int, str, Any]:
    async with http.get(url) as resp:
        return resp.status, resp.content_type, await resp.json(content_type=None)


async def post_ninjs(http: aiohttp.ClientSession, base: str, doc: object) -> tuple[int, Any]:
    return await post(http, base, doc, headers={"Content-Type": NINJS})


async def test_items_and_stories_read_as_ninjs(server: Server, http: aiohttp.ClientSession) -> None:
    _, v1 = await post(http, server.base, item("First take", ["world"], guid="quake"))
    _, v2 = await post(
        http,
        server.base,
        item(
            "Quake",
            ["world/asia"],
            guid="quake",
            subtitle="Sub",
            body="Text",
            url="https://example.com/q",
            urgency=1,
        ),
    )
    status, ctype, doc = await get_ninjs(
        http, f"{server.base}/v1/items/{v2['item']['id']}?format=ninjs"
    )
    assert status == 200 and ctype == NINJS
    assert_valid(doc)
    assert doc["uri"] == "urn:wire:story:quake" and doc["version"] == "2"
    assert doc["firstCreated"] == v1["item"]["published_at"]
    assert doc["versionCreated"] == v2["item"]["published_at"]
    assert doc["genres"] == [{"name": "Updated", "uri": "wire:mark:Updated"}]
    assert doc["urgency"] == 1
    status, ctype, story = await get_ninjs(http, f"{server.base}/v1/stories/quake?format=ninjs")
    assert status == 200 and ctype == NINJS
    assert_valid(story)
    assert [v["version"] for v in story["wire:versions"]] == ["1", "2"]
    assert {k: v for k, v in story.items() if k != "wire:versions"} == story["wire:versions"][-1]
    assert story["wire:versions"][-1] == doc
    # format=json is the default; anything else is refused, naming the field.
    _, plain = await get_json(http, f"{server.base}/v1/items/{v1['item']['id']}?format=json")
    assert plain == {"item": v1["item"]}
    for url in (f"/v1/items/{v1['item']['id']}?format=xml", "/v1/stories/quake?format=NINJS"):
        status, body = await get_json(http, server.base + url)
        assert status == 400 and body["error"]["field"] == "format", url


async def test_ninjs_in_round_trips(server: Server, http: aiohttp.ClientSession) -> None:
    sent = a_ninjs_doc()
    status, body = await post_ninjs(http, server.base, sent)
    assert status == 201, body
    published = body["item"]
    assert published["guid"] == sent["uri"] and published["version"] == 1
    _, _, back = await get_ninjs(http, f"{server.base}/v1/items/{published['id']}?format=ninjs")
    assert_valid(back)
    assert back["uri"] == sent["uri"]
    assert back["headlines"] == sent["headlines"][:2]
    assert back["bodies"] == [sent["bodies"][1]]
    assert back["subjects"] == [
        {"name": "world", "uri": "wire:tag:world"},
        {"name": "world/asia", "uri": "wire:tag:world/asia"},
        sent["subjects"][2],  # issue 13: Media Topic subjects are kept
    ]
    assert back["urgency"] == 2
    assert back["genres"] == [{"name": "Breaking", "uri": "wire:mark:Breaking"}]
    assert back["renditions"] == [sent["renditions"][1]]
    # What the wire emits, it accepts again: the same uri is the next version.
    status, again = await post_ninjs(http, server.base, back)
    assert status == 201 and again["item"]["version"] == 2
    assert again["item"]["guid"] == sent["uri"]
    # An http uri (not a guid) still identifies one story across sends.
    web = a_ninjs_doc(uri="https://news.example.com/items/42")
    _, first = await post_ninjs(http, server.base, web)
    _, second = await post_ninjs(http, server.base, web)
    assert first["item"]["guid"] == second["item"]["guid"]
    assert second["item"]["version"] == 2
    # Idempotency-Key and embargoes behave as for JSON submissions.
    key = {"Content-Type": NINJS, "Idempotency-Key": "ninjs-1"}
    doc = a_ninjs_doc(uri="urn:x:idem")
    statuses = [(await post(http, server.base, doc, headers=key))[0] for _ in range(2)]
    assert statuses == [201, 200]
    due = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    status, pending = await post_ninjs(
        http, server.base, a_ninjs_doc(uri="urn:x:e", pubStatus="withheld", embargoedUntil=due)
    )
    assert status == 202 and pending["item"]["pubstatus"] == "withheld"
    assert_valid(ninjs.to_ninjs(pending["item"]))


async def test_bad_ninjs_gets_a_400_naming_the_property(
    server: Server, http: aiohttp.ClientSession
) -> None:
    for doc, field, hint in BAD_DOCS:
        status, body = await post_ninjs(http, server.base, doc)
        assert status == 400, doc
        assert body["error"]["field"] == field and hint in body["error"]["message"], body
    status, body = await post_ninjs(http, server.base, b"{not json")
    assert status == 400 and body["error"]["code"] == "invalid_json"
    status, body = await post_ninjs(http, server.base, ["a list"])
    assert status == 400 and "ninjs" in body["error"]["message"]
    status, body = await post(http, server.base, a_ninjs_doc())  # ninjs sent as plain JSON
    assert status == 400 and body["error"]["field"] == "uri"  # "unknown field 'uri'"
    status, body = await post(
        http, server.base, a_ninjs_doc(), headers={"Content-Type": "text/plain"}
    )
    assert status == 415 and NINJS in body["error"]["message"]
    _, listing = await get_json(http, f"{server.base}/v1/items")
    assert listing["items"] == []


async def test_withdrawn_story_renders_canceled_without_text(
    server: Server, http: aiohttp.ClientSession
) -> None:
    _, v1 = await post(
        http,
        server.base,
        item(
            "Secret claim",
            ["politics"],
            guid="kill-me",
            body="Secret body",
            url="https://example.com/s",
        ),
    )
    await post(http, server.base, item("Secret claim, updated", ["politics"], guid="kill-me"))
    async with http.post(
        f"{server.base}/v1/stories/kill-me/withdraw", headers=AUTH, json={"reason": "Legal advice"}
    ) as resp:
        assert resp.status == 200
    status, ctype, story = await get_ninjs(http, f"{server.base}/v1/stories/kill-me?format=ninjs")
    assert status == 200 and ctype == NINJS
    assert_valid(story)
    assert story["pubStatus"] == "canceled" and story["edNote"] == "Legal advice"
    assert story["version"] == "3" and story["firstCreated"] == v1["item"]["published_at"]
    assert [v["pubStatus"] for v in story["wire:versions"]] == ["canceled"] * 3
    for doc in (story, *story["wire:versions"]):
        assert not {"headlines", "bodies", "renditions", "wire:mark"} & doc.keys()
    assert "Secret" not in orjson.dumps(story).decode()
    status, body = await get_json(http, f"{server.base}/v1/items/{v1['item']['id']}?format=ninjs")
    assert status == 410 and body["error"]["code"] == "withdrawn"


# -- wire export ------------------------------------------------------------------


async def run_export(base: str, *args: str) -> tuple[int, list[Any], str]:
    env = {k: v for k, v in os.environ.items() if k not in ("WIRE_URL", "WIRE_TOKEN")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "wire",
        "export",
        "--url",
        base,
        *args,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, [orjson.loads(line) for line in out.splitlines()], err.decode()


async def test_wire_export_writes_valid_ninjs_lines(
    server: Server, http: aiohttp.ClientSession
) -> None:
    ids = []
    for n in range(5):
        _, body = await post(
            http,
            server.base,
            item(f"Story {n}", ["world"] if n % 2 else ["sport"], guid="a" if n < 3 else None),
        )
        ids.append(body["item"]["id"])
    code, docs, err = await run_export(server.base, "--format", "ninjs", "--page-size", "2")
    assert code == 0, err
    assert len(docs) == 5
    for doc in docs:
        assert_valid(doc)
    assert [d["altIds"][0]["value"] for d in docs] == ids
    assert [d["version"] for d in docs[:3]] == ["1", "2", "3"]
    assert docs[2]["firstCreated"] == docs[0]["versionCreated"]  # v1 seen earlier in the run
    code, docs, _ = await run_export(
        server.base, "--format", "ninjs", "--page-size", "2", "--limit", "3", "--after", ids[0]
    )
    assert code == 0 and [d["altIds"][0]["value"] for d in docs] == ids[1:4]
    code, docs, _ = await run_export(server.base, "--tags", "sport")
    _, listing = await get_json(http, f"{server.base}/v1/items?tags=sport&after=0")
    assert code == 0 and docs == listing["items"] and len(docs) == 3
    code, docs, err = await run_export(server.base, "--after", "yesterday")
    assert code == 2 and docs == [] and "--after: not a stream id" in err  # before any request
    code, _, err = await run_export("http://127.0.0.1:9", "--format", "ninjs")
    assert code == 3 and "cannot reach" in err
