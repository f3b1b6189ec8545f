"""A careless or hostile editor's newsroom content: ``extra``, ninjs ingest and
what follows a withdrawal or an embargo, through the real HTTP API and a real
Redis, checking that a refused request wrote nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from tests.conftest import Server
from tests.support import EDITOR_TOKEN, get_json, item, post, publish
from tests.test_ninjs import NINJS, assert_valid, get_ninjs, post_ninjs
from tests.test_stories_content import server_redis
from wire.storage import keys

DOC = {"headlines": [{"role": "main", "value": "Quake"}], "subjects": [{"name": "world"}]}


def nested(levels: int) -> str:
    """A JSON value that nests ``levels`` arrays (a few hundred bytes)."""
    return "[" * levels + "1" + "]" * levels


def later() -> str:
    """An embargo time an hour from now."""
    return (datetime.now(UTC) + timedelta(hours=1)).isoformat()


def nothing_written(server: Server) -> None:
    """No stream entry, no story key and no pending embargo."""
    r = server_redis(server)
    assert r.xlen(keys.STREAM) == 0 and r.zcard(keys.EMBARGOES) == 0
    assert not r.keys(keys.PREFIX + "s:*")


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/json", '{"title":"T","tags":["w"],"extra":{"a:x":%s}}'),
        ("application/json", '{"title":"T","tags":["w"],"embargo_until":"@","extra":{"a:x":%s}}'),
        (NINJS, '{"headlines":[{"value":"T"}],"subjects":[{"name":"w"}],"acme:x":%s}'),
    ],
)
async def test_a_deeply_nested_extra_is_a_400_not_a_500(
    server: Server, http: aiohttp.ClientSession, content_type: str, body: str
) -> None:
    """300 levels fit in 16 KiB, but orjson writes at most 254: the item could
    never be stored or read back. It is refused as bad input, naming extra."""
    data = (body % nested(300)).replace("@", later()).encode()
    status, answer = await post(http, server.base, data, headers={"Content-Type": content_type})
    assert status == 400, answer
    assert answer["error"]["code"] == "invalid_field" and "nested" in answer["error"]["message"]
    nothing_written(server)
    # Nesting that every output (a story read's wire:versions included) can carry is kept.
    status, answer = await post(
        http, server.base, (body % nested(60)).replace("@", later()).encode(),
        headers={"Content-Type": content_type},
    )  # fmt: skip
    assert status in (201, 202), answer


@pytest.mark.parametrize("name", ["firstCreated", "embargoedUntil", "headlines", "wire:versions"])
async def test_extra_may_not_pose_as_what_the_wire_sets(
    server: Server, http: aiohttp.ClientSession, name: str
) -> None:
    """``extra`` is what ninjs ingest does not model: a property the wire writes
    itself (or a wire: one) there would come out in ninjs as the wire's word
    (a firstCreated of 1999 on a story trimmed of version 1)."""
    status, answer = await post(http, server.base, item(extra={name: "1999-01-01T00:00:00Z"}))
    assert status == 400, answer
    assert answer["error"]["field"] == "extra" and name in answer["error"]["message"]
    nothing_written(server)


async def test_a_story_read_in_ninjs_posted_back_leaves_no_wire_property(
    server: Server, http: aiohttp.ClientSession
) -> None:
    """docs/ninjs.md: ``wire:versions`` and ``wire:older`` are read and ignored, so
    the wire's own output can be posted back; wire:older must not end up in
    extra (and then on every read of the item)."""
    for n in range(3):
        await publish(http, server.base, f"Take {n}", guid="loop")
    _, _, doc = await get_ninjs(http, f"{server.base}/v1/stories/loop?format=ninjs&limit=1")
    assert doc["wire:older"] == 3
    status, answer = await post_ninjs(http, server.base, doc)
    assert status == 201, answer
    assert answer["item"]["version"] == 4 and "extra" not in answer["item"]
    url = f"{server.base}/v1/items/{answer['item']['id']}?format=ninjs"
    _, _, back = await get_ninjs(http, url)
    assert not [k for k in back if k.startswith("wire:")]
    assert_valid(back)


async def test_ninjs_property_names_the_wire_cannot_keep_are_dropped(
    server: Server, http: aiohttp.ClientSession
) -> None:
    """docs/ninjs.md: a property name that is not 1-100 letters, digits and
    ``. _ : -`` is dropped (``$schema`` and ``@context`` are common), not a 400."""
    doc = {**DOC, "$schema": "https://iptc.org/x.json", "@context": {}, "profile": "p"}
    status, answer = await post_ninjs(http, server.base, doc)
    assert status == 201, answer
    assert answer["item"]["extra"] == {"profile": "p"}


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("associations", {"type": "picture", "uri": "https://img.example.com/1"}),
        ("people", "Jane Doe"),
        ("places", {"name": "Tokyo"}),
        ("organisations", "IPTC"),
        ("descriptions", "A summary"),
        ("genres", "news"),
        ("altIds", 7),
    ],
)
async def test_ninjs_arrays_of_the_wrong_type_are_refused_not_dropped(
    server: Server, http: aiohttp.ClientSession, name: str, value: object
) -> None:
    """A property the wire reads that is not an array was silently dropped (201,
    the people or the summary lost): it is a 400 naming it, nothing written."""
    status, answer = await post_ninjs(http, server.base, {**DOC, name: value})
    assert status == 400, answer
    assert answer["error"]["code"] == "invalid_field" and answer["error"]["field"] == name
    nothing_written(server)
    status, _ = await post_ninjs(http, server.base, {**DOC, name: None})
    assert status == 201


async def test_ninjs_description_values_must_be_text(
    server: Server, http: aiohttp.ClientSession
) -> None:
    """A summary whose value is not a string was dropped without a word."""
    doc: dict[str, Any] = {**DOC, "descriptions": [{"role": "summary", "value": 5}]}
    status, answer = await post_ninjs(http, server.base, doc)
    assert status == 400, answer
    assert answer["error"]["field"] == "descriptions"
    nothing_written(server)
    _, found = await get_json(http, f"{server.base}/v1/items")
    assert found == {"items": []}


async def test_withdrawing_a_story_that_is_only_embargoed_says_how_to_stop_it(
    server: Server, http: aiohttp.ClientSession
) -> None:
    """An editor killing a story whose only version is still under embargo got
    ``404 no such story``, and the item then went out at its time. The 404
    stays (nothing was published to withdraw) but names the pending item and
    how to cancel it; nothing is written or cancelled by it."""
    held = await publish(http, server.base, "Held back", guid="held", embargo_until=later())
    assert held["pubstatus"] == "withheld"
    auth = {"Authorization": f"Bearer {EDITOR_TOKEN}"}
    url = f"{server.base}/v1/stories/held/withdraw"
    async with http.post(url, json={"reason": "Legal"}, headers=auth) as resp:
        assert resp.status == 404
        error = (await resp.json())["error"]
    assert error["code"] == "not_found" and "DELETE /v1/embargoes/<guid>" in error["message"]
    _, pending = await get_json(http, f"{server.base}/v1/embargoes", headers=auth)
    assert [p["guid"] for p in pending["embargoes"]] == ["held"]
    assert server_redis(server).xlen(keys.STREAM) == 0
    # A guid with nothing at all is the plain 404.
    async with http.post(f"{server.base}/v1/stories/none/withdraw", json={"reason": "x"},
                         headers=auth) as resp:  # fmt: skip
        assert resp.status == 404
        assert "embargo" not in (await resp.json())["error"]["message"]
