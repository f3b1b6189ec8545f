"""Issue 13 on the server: corrections, translations and the language filter.

Everything runs against a real Redis through the real HTTP API: the rules
that need the store (a correction's story exists, a translation's original
exists) are checked in the publish and embargo scripts, before any write.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import Server, ServerFactory
from tests.support import EDITOR_TOKEN, get_json, item, post, publish, sport_partner
from wire.storage import keys
from wire.storage.store import Store
from wire.web.appkeys import STORE

AUTH = {"Authorization": f"Bearer {EDITOR_TOKEN}"}
PARTNER = {"Authorization": "Bearer partner"}


async def story(http: aiohttp.ClientSession, server: Server, guid: str, **kw: Any) -> Any:
    status, body = await get_json(http, f"{server.base}/v1/stories/{guid}", **kw)
    assert status == 200, body
    return body["story"]


async def refused(
    http: aiohttp.ClientSession, server: Server, body: dict[str, Any], field: str
) -> None:
    status, answer = await post(http, server.base, body)
    assert status == 400, answer
    assert answer["error"]["code"] == "invalid_field" and answer["error"]["field"] == field


async def test_a_correction_needs_an_existing_story(
    server: Server, http: aiohttp.ClientSession
) -> None:
    await refused(http, server, item("Fix", guid="c-new", correction=True), "correction")
    # Refused before any write: the guid is still new.
    assert not server_redis(server).exists(keys.story("c-new"), keys.story_ids("c-new"))
    first = await publish(http, server.base, "First", guid="c-new")
    assert first["version"] == 1 and first["mark"] is None
    fixed = await publish(http, server.base, "Fixed", guid="c-new", correction=True)
    assert fixed["version"] == 2 and fixed["mark"] == "Corrected" and fixed["correction"] is True
    again = await publish(http, server.base, "Moved on", guid="c-new")
    assert again["mark"] == "Updated" and "correction" not in again
    marked = await publish(http, server.base, "Own mark", guid="c-new", correction=True, mark="Fix")
    assert marked["mark"] == "Fix"
    # Stored exactly as answered, and delivered so by every read.
    got = await story(http, server, "c-new")
    assert got["versions"] == [first, fixed, again, marked]
    _, read = await get_json(http, f"{server.base}/v1/items/{fixed['id']}")
    assert read["item"] == fixed


async def test_an_embargoed_correction_needs_an_existing_story_too(
    server: Server, http: aiohttp.ClientSession
) -> None:
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    body = item("Fix", guid="c-held", correction=True, embargo_until=later)
    await refused(http, server, body, "correction")
    assert not server_redis(server).zcard(keys.EMBARGOES)
    await publish(http, server.base, "First", guid="c-held")
    status, held = await post(http, server.base, body)
    assert status == 202 and held["item"]["mark"] == "Corrected", held


async def test_translations_are_linked_both_ways(
    server: Server, http: aiohttp.ClientSession
) -> None:
    # A translation may come first (a forward link): listed once its original exists.
    ru = await publish(http, server.base, "Землетрясение", guid="t-ru", language="ru",
                       translation_of="t-en")  # fmt: skip
    status, _ = await get_json(http, f"{server.base}/v1/stories/t-en")
    assert status == 404
    english = await publish(http, server.base, "Quake", guid="t-en")
    await publish(http, server.base, "Séisme", guid="t-fr", language="fr", translation_of="t-en")
    ru2 = await publish(http, server.base, "Землетрясение!", guid="t-ru", language="ru",
                        translation_of="t-en")  # fmt: skip
    original = await story(http, server, "t-en")
    assert "translation_of" not in original and original["current"] == english
    assert original["translations"] == [
        {"guid": "t-fr", "language": "fr", "version": 1},
        {"guid": "t-ru", "language": "ru", "version": 2},
    ]
    translation = await story(http, server, "t-ru")
    assert translation["translation_of"] == "t-en" and translation["translations"] == []
    assert translation["current"] == ru2 and translation["versions"][0] == ru
    # ninjs: the translation names its original.
    _, doc = await get_json(http, f"{server.base}/v1/stories/t-ru?format=ninjs")
    assert {"name": "original", "rel": "translationOf", "uri": "urn:wire:story:t-en"} in doc[
        "associations"
    ]
    # A withdrawn translation is no longer listed.
    status, _ = await post_withdraw(http, server, "t-fr")
    assert status == 200
    original = await story(http, server, "t-en")
    assert [t["guid"] for t in original["translations"]] == ["t-ru"]


async def test_an_embargoed_translation_is_linked_on_release(
    server: Server, http: aiohttp.ClientSession
) -> None:
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    body = item("Перевод", guid="e-ru", language="ru", translation_of="e-en", embargo_until=later)
    status, held = await post(http, server.base, item("Quake", guid="e-en", embargo_until=later))
    assert status == 202, held
    status, held = await post(http, server.base, body)
    assert status == 202, held
    assert not server_redis(server).exists(keys.translations("e-en"))
    # Released (the item hash keeps where to record the link), the two are linked.
    store: Store = server.app[STORE]
    soon = int((datetime.now(UTC) + timedelta(hours=2)).timestamp() * 1000)
    released = await store.release_embargoes(soon)
    assert sorted(r[0] for r in released) == ["new", "new"]
    original = await story(http, server, "e-en")
    assert original["translations"] == [{"guid": "e-ru", "language": "ru", "version": 1}]
    assert (await story(http, server, "e-ru"))["translation_of"] == "e-en"


@pytest.fixture
async def limited(make_server: ServerFactory, tmp_path: Path) -> Server:
    """A wire with a sport-only partner token."""
    path = sport_partner(tmp_path)
    return await make_server(entitlements=path, subscriber_tokens=("staff",))


async def test_translations_are_listed_within_the_grant(
    limited: Server, http: aiohttp.ClientSession
) -> None:
    await publish(http, limited.base, "Match", ["sport"], guid="g-en")
    await publish(http, limited.base, "Partido", ["sport"], guid="g-es", language="es",
                  translation_of="g-en")  # fmt: skip
    await publish(http, limited.base, "Match (secret)", ["politics"], guid="g-fr", language="fr",
                  translation_of="g-en")  # fmt: skip
    seen = await story(http, limited, "g-en", headers=PARTNER)
    assert seen["translations"] == [{"guid": "g-es", "language": "es", "version": 1}]
    staff = await story(http, limited, "g-en", headers={"Authorization": "Bearer staff"})
    assert [t["guid"] for t in staff["translations"]] == ["g-es", "g-fr"]
    status, _ = await get_json(http, f"{limited.base}/v1/stories/g-fr", headers=PARTNER)
    assert status == 404


async def test_the_language_filter_combines_with_tags_and_pages(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    server = await make_server(scan_budget=3)
    want = []
    for n in range(4):
        want.append(await publish(http, server.base, f"en {n}", ["world"], language="en"))
        await publish(http, server.base, f"ru {n}", ["world"], language="ru")
        await publish(http, server.base, f"de {n}", ["world"], language="de")
        want.append(await publish(http, server.base, f"EN sport {n}", ["sport"], language="EN"))
        await publish(http, server.base, f"pt {n}", ["world"], language="pt-br")
    brazil = await get_json(http, f"{server.base}/v1/items?lang=PT-br&limit=1")
    assert brazil[1]["items"][0]["language"] == "pt-BR"
    got = await follow(http, f"{server.base}/v1/items?lang=en&tags=world&limit=2", "after=0")
    assert [i["title"] for i in got] == [i["title"] for i in want if i["tags"] == ["world"]]
    got = await follow(http, f"{server.base}/v1/items?lang=en,de&limit=3", "after=0")
    assert [i["language"] for i in got] == ["en", "de", "en"] * 4
    newest = await follow(http, f"{server.base}/v1/items?lang=ru&limit=2", "")
    assert [i["title"] for i in newest] == [f"ru {n}" for n in (3, 2, 1, 0)]


async def follow(http: aiohttp.ClientSession, url: str, start: str) -> list[dict[str, Any]]:
    """Every item a read returns, following ``next`` to the end."""
    got: list[dict[str, Any]] = []
    direction = start.split("=")[0] or "before"
    query = f"&{start}" if start else ""
    for _ in range(100):
        status, page = await get_json(http, url + query)
        assert status == 200, page
        got.extend(page["items"])
        if "next" not in page:
            return got
        query = f"&{direction}={page['next']}"
    raise AssertionError("paging did not end")


@pytest.mark.parametrize("bad", ["e", "x", "english!", "en,12345678901", "en_"])
async def test_a_bad_language_is_refused(
    server: Server, http: aiohttp.ClientSession, bad: str
) -> None:
    status, body = await get_json(http, f"{server.base}/v1/items?lang={bad}")
    assert status == 400 and body["error"]["field"] == "lang", body


async def test_a_withdrawal_passes_the_language_filter(
    server: Server, http: aiohttp.ClientSession
) -> None:
    await publish(http, server.base, "Claim", ["world"], guid="w-ru", language="ru")
    status, _ = await post_withdraw(http, server, "w-ru")
    assert status == 200
    _, body = await get_json(http, f"{server.base}/v1/items?lang=en")
    assert [i["pubstatus"] for i in body["items"]] == ["canceled"]


async def post_withdraw(http: aiohttp.ClientSession, server: Server, guid: str) -> tuple[int, Any]:
    url = f"{server.base}/v1/stories/{guid}/withdraw"
    async with http.post(url, json={"reason": "Legal advice"}, headers=AUTH) as resp:
        return resp.status, await resp.json()


def server_redis(server: Server) -> Any:
    """A synchronous client of the test's Redis."""
    import redis

    assert server.settings.redis_url is not None
    return redis.Redis.from_url(server.settings.redis_url)


async def test_a_translation_of_a_withdrawn_story_is_refused_and_never_released(
    server: Server, http: aiohttp.ClientSession
) -> None:
    """A kill is not undone by a translation: a translation of a withdrawn story
    is 409 story_withdrawn naming translation_of (alone, embargoed or in a batch;
    nothing written); one embargoed before the kill is dropped at its release."""
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    await publish(http, server.base, "Quake", ["world"], guid="k-en")
    held = item("Séisme", guid="k-fr", language="fr", translation_of="k-en", embargo_until=later)
    status, answer = await post(http, server.base, held)
    assert status == 202, answer
    status, _ = await post_withdraw(http, server, "k-en")
    assert status == 200
    for body in (
        item("Beben", guid="k-de", language="de", translation_of="k-en"),
        item("Beben", guid="k-de", language="de", translation_of="k-en", embargo_until=later),
    ):
        status, answer = await post(http, server.base, body)
        assert status == 409, answer
        assert answer["error"]["code"] == "story_withdrawn"
        assert answer["error"]["field"] == "translation_of"
    status, answer = await post(
        http, server.base, [item("Terremoto", guid="k-es", language="es", translation_of="k-en")]
    )
    assert status == 200 and answer["results"][0]["error"]["code"] == "story_withdrawn"
    # A forward link (an original that does not exist yet) is still fine.
    status, answer = await post(http, server.base, item("Sismo", guid="k-pt", translation_of="k-x"))
    assert status == 201, answer
    store: Store = server.app[STORE]
    soon = int((datetime.now(UTC) + timedelta(hours=2)).timestamp() * 1000)
    assert await store.release_embargoes(soon) == [("original_withdrawn", "k-fr", "")]
    for guid in ("k-fr", "k-de", "k-es"):
        status, _ = await get_json(http, f"{server.base}/v1/stories/{guid}")
        assert status == 404, guid
    assert not server_redis(server).exists(keys.translations("k-en"))


async def test_a_story_that_stops_translating_an_original_is_no_longer_listed_under_it(
    server: Server, http: aiohttp.ClientSession
) -> None:
    """Links only grow in Redis; the list follows each translation's current
    version: one that now names another original, or none, is listed there only."""
    await publish(http, server.base, "Quake", ["world"], guid="m-en")
    await publish(http, server.base, "Earthquake", ["world"], guid="m-en2")
    await publish(http, server.base, "Séisme", ["world"], guid="m-fr", language="fr",
                  translation_of="m-en")  # fmt: skip
    await publish(http, server.base, "Sismo", ["world"], guid="m-es", language="es",
                  translation_of="m-en")  # fmt: skip
    assert [t["guid"] for t in (await story(http, server, "m-en"))["translations"]] == [
        "m-es",
        "m-fr",
    ]
    await publish(http, server.base, "Séisme (2)", ["world"], guid="m-fr", language="fr",
                  translation_of="m-en2")  # fmt: skip
    await publish(http, server.base, "Sismo (2)", ["world"], guid="m-es", language="es")
    assert (await story(http, server, "m-en"))["translations"] == []
    moved = (await story(http, server, "m-en2"))["translations"]
    assert moved == [{"guid": "m-fr", "language": "fr", "version": 2}]
