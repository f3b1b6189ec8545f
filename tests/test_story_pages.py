"""A story read is bounded: the newest versions, a page at a time.

``GET /v1/stories/<guid>`` answers at most ``limit`` versions and about
ANSWER_BYTES of them, with ``older`` to page back with ``?before=``; every
test runs against the real HTTP API and a real Redis.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from tests.conftest import Server, ServerFactory
from tests.support import EDITOR_TOKEN, eventually, get_json, post, publish, sport_partner
from tests.test_ninjs import assert_valid
from wire.storage.store import ANSWER_BYTES

AUTH = {"Authorization": f"Bearer {EDITOR_TOKEN}"}
PARTNER = {"Authorization": "Bearer partner"}
STAFF = {"Authorization": "Bearer staff"}
ADMIN = "admin-token-for-story-pages"
#: A body of about 400 KB (4-byte characters, at the 100,000 character limit).
BIG = "\U0001d11e" * 99_000


@pytest.fixture
async def limited(make_server: ServerFactory, tmp_path: Path) -> Server:
    """A wire with a named sport-only partner token and an unlimited staff token."""
    path = sport_partner(tmp_path)
    return await make_server(
        entitlements=path, subscriber_tokens=("staff",), admin_tokens=(ADMIN,), ledger_flush=0.05
    )


async def read(
    http: aiohttp.ClientSession, server: Server, query: str, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    """GET ``/v1/stories/<query>``: the status and the raw body."""
    async with http.get(f"{server.base}/v1/stories/{query}", headers=headers or AUTH) as resp:
        return resp.status, await resp.read()


async def page(
    http: aiohttp.ClientSession, server: Server, query: str, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    """The ``story`` object of a 200 story read."""
    status, raw = await read(http, server, query, headers)
    assert status == 200, raw[:300]
    story: dict[str, Any] = orjson.loads(raw)["story"]
    return story


def numbers(story: dict[str, Any]) -> list[int]:
    return [v["version"] for v in story["versions"]]


async def every_page(
    http: aiohttp.ClientSession, server: Server, guid: str, extra: str = ""
) -> list[tuple[int, dict[str, Any]]]:
    """Each page of a story read from the newest, following ``older``: (bytes, page)."""
    pages: list[tuple[int, dict[str, Any]]] = []
    query = f"{guid}?{extra}"
    while True:
        status, raw = await read(http, server, query)
        assert status == 200, raw[:300]
        story: dict[str, Any] = orjson.loads(raw)["story"]
        pages.append((len(raw), story))
        if "older" not in story:
            return pages
        assert len(pages) < 100, "older never ends"
        query = f"{guid}?{extra}&before={story['older']}"


async def test_a_story_of_many_big_versions_answers_bounded_pages_back_to_version_1(
    server: Server, http: aiohttp.ClientSession
) -> None:
    sent = [await publish(http, server.base, f"Live {n}", body=BIG, guid="blog") for n in range(30)]
    size = max(len(orjson.dumps(v)) for v in sent)
    assert size > 390_000  # 30 of them: about 12 MB
    pages = await every_page(http, server, "blog")
    first_bytes, first = pages[0]
    # The newest versions, about ANSWER_BYTES of them (the one reaching it
    # included), and the current version besides.
    assert first_bytes < ANSWER_BYTES + 3 * size
    assert numbers(first)[-1] == 30 and first["current"] == sent[-1]
    assert first["older"] == numbers(first)[0] > 1
    for got, story in pages:
        assert got < ANSWER_BYTES + 3 * size and story["versions"]
        assert story["current"] == sent[-1]
        assert numbers(story) == list(range(numbers(story)[0], numbers(story)[-1] + 1))
    # Paging back returns every version exactly once, and as stored.
    everything = [v for _, story in reversed(pages) for v in story["versions"]]
    assert everything == sent


async def test_limit_bounds_a_page_and_before_pages_back(
    server: Server, http: aiohttp.ClientSession
) -> None:
    sent = [await publish(http, server.base, f"V{n}", guid="short") for n in range(7)]
    newest = await page(http, server, "short?limit=3")
    assert numbers(newest) == [5, 6, 7] and newest["older"] == 5
    assert newest["versions"] == sent[4:] and newest["current"] == sent[-1]
    middle = await page(http, server, "short?limit=3&before=5")
    assert numbers(middle) == [2, 3, 4] and middle["older"] == 2
    assert middle["current"] == sent[-1] and middle["translations"] == []
    last = await page(http, server, "short?limit=3&before=2")
    assert numbers(last) == [1] and "older" not in last
    # A before past the newest version reads from the newest.
    assert numbers(await page(http, server, "short?limit=2&before=900")) == [6, 7]
    whole = await page(http, server, "short")
    assert whole["versions"] == sent and "older" not in whole


async def test_the_default_limit_is_100_versions(
    server: Server, http: aiohttp.ClientSession
) -> None:
    for n in range(103):
        await publish(http, server.base, f"V{n}", guid="long")
    newest = await page(http, server, "long")
    assert numbers(newest) == list(range(4, 104)) and newest["older"] == 4
    assert numbers(await page(http, server, "long?before=4")) == [1, 2, 3]


async def test_a_withdrawn_storys_older_pages_are_stubs_too(
    server: Server, http: aiohttp.ClientSession
) -> None:
    for n in range(5):
        await publish(http, server.base, f"Secret {n}", guid="gone", body="LEAKED-BODY")
    async with http.post(
        f"{server.base}/v1/stories/gone/withdraw", json={"reason": "Legal"}, headers=AUTH
    ) as resp:
        assert resp.status == 200
        withdrawal = (await resp.json())["item"]
    newest = await page(http, server, "gone?limit=2")
    assert numbers(newest) == [5, 6] and newest["current"] == withdrawal
    for before in (5, 3, 2):
        status, raw = await read(http, server, f"gone?limit=2&before={before}")
        assert status == 200 and b"LEAKED-BODY" not in raw and b"Secret" not in raw, before
        story = orjson.loads(raw)["story"]
        assert story["current"] == withdrawal
        assert {v["pubstatus"] for v in story["versions"]} == {"canceled"}
        assert "translation_of" not in story
    status, raw = await read(http, server, "gone?limit=2&before=3&format=ninjs")
    assert status == 200 and b"LEAKED-BODY" not in raw and b"Secret" not in raw


async def test_a_limited_reader_pages_through_only_the_versions_it_may_see(
    limited: Server, http: aiohttp.ClientSession
) -> None:
    desks = ["sport", "world", "sport", "world", "world"]
    sent = [
        await publish(http, limited.base, f"{d} {n}", [d], guid="mix") for n, d in enumerate(desks)
    ]
    # The newest page holds no sport version: empty, with the story's newest
    # version the partner may see as current, and where to go on.
    newest = await page(http, limited, "mix?limit=2", PARTNER)
    assert newest["versions"] == [] and newest["current"] == sent[2] and newest["older"] == 4
    middle = await page(http, limited, "mix?limit=2&before=4", PARTNER)
    assert middle["versions"] == [sent[2]] and middle["older"] == 2
    assert middle["current"] == sent[2]
    last = await page(http, limited, "mix?limit=2&before=2", PARTNER)
    assert last["versions"] == [sent[0]] and "older" not in last
    staff = await page(http, limited, "mix?limit=2&before=4", STAFF)
    assert staff["versions"] == sent[1:3] and staff["current"] == sent[-1]
    for query in ("mix?limit=2&format=ninjs", "mix?before=3&format=ninjs"):
        status, raw = await read(http, limited, query, PARTNER)
        assert status == 200 and b"world" not in raw, query
    # The ledger records what was answered: the versions on the pages and
    # the current one, the versions of the world desk never.
    deliveries = await eventually(
        lambda: get_json(
            http,
            f"{limited.base}/v1/stories/mix/deliveries",
            headers={"Authorization": f"Bearer {ADMIN}"},
        ),
        lambda got: [d["versions"] for d in got[1]["story"]["deliveries"]] == [[1, 3]],
        "the partner's story reads in the ledger",
    )
    assert [d["partner"] for d in deliveries[1]["story"]["deliveries"]] == ["Sport partner"]


async def test_a_story_the_reader_may_not_see_is_404_like_a_missing_one_on_every_page(
    limited: Server, http: aiohttp.ClientSession
) -> None:
    for n in range(4):
        await publish(http, limited.base, f"Deal {n}", ["politics"], guid="deal")
    for query in ("", "?limit=1", "?before=2", "?before=4&limit=1", "?format=ninjs&before=3"):
        real = await read(http, limited, "deal" + query, PARTNER)
        absent = await read(http, limited, "nope" + query, PARTNER)
        assert real[0] == absent[0] == 404, query
        assert real[1].replace(b"deal", b"X") == absent[1].replace(b"nope", b"X"), query
    assert numbers(await page(http, limited, "deal?before=3", STAFF)) == [1, 2]


async def test_a_reader_whose_versions_lie_beyond_the_scan_budget_gets_404(
    make_server: ServerFactory, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    path = sport_partner(tmp_path)
    wire = await make_server(entitlements=path, subscriber_tokens=("staff",), scan_budget=3)
    await publish(http, wire.base, "Sport", ["sport"], guid="far")
    for n in range(5):
        await publish(http, wire.base, f"World {n}", ["world"], guid="far")
    # Version 1 is five versions behind the newest: outside a search of three
    # (which counts the versions a first page read), whatever the page's size:
    # a bigger page must not widen the search.
    for query in (
        "far?limit=3", "far?before=2", "far?limit=1", "far?before=3&format=ninjs",
        "far?limit=6", "far?limit=500", "far?before=7&limit=6",
    ):  # fmt: skip
        status, raw = await read(http, wire, query, PARTNER)
        assert status == 404 and b"Sport" not in raw, query
    await publish(http, wire.base, "Sport again", ["sport"], guid="far")
    near = await page(http, wire, "far?limit=1&before=2", PARTNER)
    assert numbers(near) == [1] and near["current"]["version"] == 7


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=abc", "limit"),
        ("limit=%C2%B2", "limit"),
        ("limit=", "limit"),
        ("before=0", "before"),
        ("before=1", "before"),
        ("before=-3", "before"),
        ("before=2.5", "before"),
        ("before=%C2%B2", "before"),
        ("before=", "before"),
        ("before=1000000000", "before"),
        ("before=" + "9" * 5000, "before"),
    ],
)
async def test_a_bad_limit_or_before_is_a_400_naming_it(
    server: Server, http: aiohttp.ClientSession, query: str, field: str
) -> None:
    await publish(http, server.base, "One", guid="one")
    for guid in ("one", "missing"):
        status, body = await get_json(http, f"{server.base}/v1/stories/{guid}?{query}")
        assert status == 400, body
        assert body["error"]["code"] == "invalid_field" and body["error"]["field"] == field


async def test_ninjs_story_reads_are_bounded_the_same_way(
    server: Server, http: aiohttp.ClientSession
) -> None:
    sent = [await publish(http, server.base, f"Live {n}", body=BIG, guid="nb") for n in range(16)]
    async with http.get(f"{server.base}/v1/stories/nb?format=ninjs") as resp:
        assert resp.status == 200
        raw = await resp.read()
    doc = orjson.loads(raw)
    assert len(raw) < ANSWER_BYTES + 3 * len(orjson.dumps(sent[0]))
    listed = [int(v["version"]) for v in doc["wire:versions"]]
    assert listed[-1] == 16 and doc["wire:older"] == listed[0] > 1
    assert doc["version"] == "16"
    # Version 1 is not on the page; its time still is the story's firstCreated.
    assert doc["firstCreated"] == sent[0]["published_at"]
    assert {v["firstCreated"] for v in doc["wire:versions"]} == {sent[0]["published_at"]}
    async with http.get(f"{server.base}/v1/stories/nb?format=ninjs&before=3&limit=1") as resp:
        older = orjson.loads(await resp.read())
    assert [v["version"] for v in older["wire:versions"]] == ["2"] and older["wire:older"] == 2
    assert older["version"] == "16"
    assert_valid(doc)
    assert_valid(older)
    _, item = await get_json(http, f"{server.base}/v1/items/{sent[-1]['id']}?format=ninjs")
    assert item["firstCreated"] == sent[0]["published_at"]


async def test_a_ninjs_document_carrying_wire_older_is_still_accepted(
    server: Server, http: aiohttp.ClientSession
) -> None:
    doc = {
        "uri": "urn:wire:story:echo",
        "headlines": [{"role": "main", "value": "Echo"}],
        "subjects": [{"name": "world", "uri": "wire:tag:world"}],
        "wire:older": 3,
    }
    status, body = await post(
        http, server.base, doc, headers={"Content-Type": "application/vnd.iptc.ninjs+json"}
    )
    assert status == 201, body


async def test_a_story_lists_at_most_200_translations(
    server: Server, http: aiohttp.ClientSession
) -> None:
    """The translations of a story are a set editors grow: a read lists a bounded
    number of them, each once, ordered by guid."""
    await publish(http, server.base, "Quake", ["world"], guid="quake")
    batch = [
        {"title": f"Quake {n}", "tags": ["world"], "guid": f"quake-{n:03d}",
         "language": "fr", "translation_of": "quake"}
        for n in range(205)
    ]  # fmt: skip
    headers = {**AUTH, "Content-Type": "application/json"}
    async with http.post(
        f"{server.base}/v1/items", data=orjson.dumps(batch), headers=headers
    ) as resp:
        assert resp.status == 200, await resp.text()
    listed = [t["guid"] for t in (await page(http, server, "quake"))["translations"]]
    assert len(listed) == 200 == len(set(listed))
    assert listed == sorted(listed) and set(listed) <= {b["guid"] for b in batch}


async def test_a_translation_is_listed_at_the_newest_version_the_reader_may_read(
    limited: Server, http: aiohttp.ClientSession
) -> None:
    """A read of the original names each translation as a read of that story
    would: its newest version within the reader's grant, not its newest of all."""
    await publish(http, limited.base, "Match", ["sport"], guid="orig")
    fr = {"guid": "fr", "translation_of": "orig", "language": "fr"}
    first = await publish(http, limited.base, "Match (fr)", ["sport"], **fr)
    await publish(http, limited.base, "Politique", ["politics"], **fr)
    assert (await page(http, limited, "fr", PARTNER))["current"] == first
    listed = (await page(http, limited, "orig", PARTNER))["translations"]
    assert listed == [{"guid": "fr", "language": "fr", "version": 1}]
    # The unlimited reader is told the newest version, as before.
    listed = (await page(http, limited, "orig", STAFF))["translations"]
    assert listed == [{"guid": "fr", "language": "fr", "version": 2}]
    # A translation with no version the partner may read is not mentioned.
    await publish(http, limited.base, "Politica", ["politics"], guid="it", language="it",
                  translation_of="orig")  # fmt: skip
    assert [t["guid"] for t in (await page(http, limited, "orig", PARTNER))["translations"]] == [
        "fr"
    ]
