"""Issue 11 (hardening): a partner sees nothing outside its grant, by any route,
derived data included; metrics name nothing; history reads are bounded.

Everything runs against a real Redis through the real HTTP, WebSocket and SSE
interfaces; the bulk of the scan-budget stream is written through the store's
own publish (the same Lua script as ``POST /v1/items``), only faster.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import websockets

from tests.conftest import Server, ServerFactory
from tests.support import EDITOR_TOKEN, get_json, item, post, publish, sse_items
from tests.test_ninjs import run_export
from wire.core.entry import Entry
from wire.core.items import parse_submission, published_now
from wire.core.stored import first_version
from wire.runtime.settings import Settings
from wire.storage import keys
from wire.storage.store import Store, connect

AUTH = {"Authorization": f"Bearer {EDITOR_TOKEN}"}
PARTNER = {"Authorization": "Bearer partner"}
STAFF = {"Authorization": "Bearer staff"}
SECRET = "politics/secret-deal"


@pytest.fixture
async def limited(make_server: ServerFactory, partner_file: Path) -> Server:
    """A wire with a sport-only partner token and an unlimited staff token."""
    return await make_server(entitlements=partner_file, subscriber_tokens=("staff",))


async def recv(ws: Any, wait: float = 5.0) -> dict[str, Any]:
    msg: dict[str, Any] = orjson.loads(await asyncio.wait_for(ws.recv(), wait))
    return msg


async def next_item(ws: Any) -> dict[str, Any]:
    while True:
        msg = await recv(ws)
        if msg["type"] == "item":
            got: dict[str, Any] = msg["item"]
            return got


async def withdraw(http: aiohttp.ClientSession, base: str, guid: str) -> dict[str, Any]:
    async with http.post(
        f"{base}/v1/stories/{guid}/withdraw", json={"reason": "Legal"}, headers=AUTH
    ) as resp:
        assert resp.status == 200
        withdrawn: dict[str, Any] = (await resp.json())["item"]
        return withdrawn


async def text(http: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> tuple[int, str]:
    async with http.get(url, headers=headers) as resp:
        return resp.status, await resp.text()


async def two_desk_story(http: aiohttp.ClientSession, base: str) -> tuple[Any, Any]:
    """Story "deal": v1 in sport (the partner's), v2 moved to the secret desk."""
    _, v1 = await post(http, base, item("Transfer talks", ["sport"], guid="deal"))
    _, v2 = await post(
        http, base, item("Cabinet in on it", [SECRET], guid="deal", body="SECRET-BODY")
    )
    return v1["item"], v2["item"]


# ---- 3: a story read shows only the versions within the grant ----------------


async def test_story_read_lists_only_the_versions_within_the_grant(
    limited: Server, http: aiohttp.ClientSession
) -> None:
    v1, v2 = await two_desk_story(http, limited.base)
    status, body = await get_json(http, f"{limited.base}/v1/stories/deal", headers=PARTNER)
    assert status == 200
    assert body["story"]["versions"] == [v1] and body["story"]["current"] == v1
    for url in ("/v1/stories/deal", "/v1/stories/deal?format=ninjs", f"/v1/items/{v1['id']}"):
        status, raw = await text(http, limited.base + url, PARTNER)
        assert status == 200 and "SECRET-BODY" not in raw and "Cabinet" not in raw, url
    # Staff still see the whole story.
    status, body = await get_json(http, f"{limited.base}/v1/stories/deal", headers=STAFF)
    assert [v["id"] for v in body["story"]["versions"]] == [v1["id"], v2["id"]]


# ---- 5: outside the grant is answered exactly like missing ----------------------


async def test_an_item_or_story_outside_the_grant_is_404_like_a_missing_one(
    limited: Server, http: aiohttp.ClientSession
) -> None:
    _, secret = await post(http, limited.base, item("Leak", [SECRET], guid="leak"))
    sid = secret["item"]["id"]
    missing = "1-1"
    for real, absent in (
        (f"/v1/items/{sid}", f"/v1/items/{missing}"),
        (f"/v1/items/{sid}?format=ninjs", f"/v1/items/{missing}?format=ninjs"),
        ("/v1/stories/leak", "/v1/stories/nope"),
        ("/v1/stories/leak?format=ninjs", "/v1/stories/nope?format=ninjs"),
    ):
        got = [await get_json(http, limited.base + u, headers=PARTNER) for u in (real, absent)]
        assert [s for s, _ in got] == [404, 404], real
        assert got[0][1]["error"]["code"] == got[1][1]["error"]["code"] == "not_found"
        # The messages differ only by the id asked for.
        assert got[0][1]["error"]["message"].replace(sid, "X").replace("leak", "X") == (
            got[1][1]["error"]["message"].replace(missing, "X").replace("nope", "X")
        )


# ---- 4: a withdrawal shows each reader only the tags within its grant ----------


async def test_withdrawal_tags_are_narrowed_in_every_history_read(
    limited: Server, http: aiohttp.ClientSession
) -> None:
    v1, _ = await two_desk_story(http, limited.base)
    kill = await withdraw(http, limited.base, "deal")
    assert sorted(kill["tags"]) == sorted(["sport", SECRET])  # the editor sees all
    narrowed = {**kill, "tags": ["sport"]}
    _, listing = await get_json(http, f"{limited.base}/v1/items", headers=PARTNER)
    assert listing["items"] == [narrowed]
    _, listing = await get_json(http, f"{limited.base}/v1/items?after=0", headers=PARTNER)
    assert listing["items"] == [narrowed]
    _, one = await get_json(http, f"{limited.base}/v1/items/{kill['id']}", headers=PARTNER)
    assert one["item"] == narrowed
    _, story = await get_json(http, f"{limited.base}/v1/stories/deal", headers=PARTNER)
    # The stub of the secret version is gone too; the sport version's stub stays.
    assert [v["id"] for v in story["story"]["versions"]] == [v1["id"], kill["id"]]
    assert story["story"]["current"] == narrowed
    for url in ("/v1/items", f"/v1/items/{kill['id']}", "/v1/stories/deal?format=ninjs"):
        status, raw = await text(http, limited.base + url, PARTNER)
        assert status == 200 and "secret-deal" not in raw, url
    _, staff = await get_json(http, f"{limited.base}/v1/items", headers=STAFF)
    assert staff["items"][0] == kill


async def test_withdrawal_tags_are_narrowed_live_over_websocket_and_sse(
    limited: Server, http: aiohttp.ClientSession
) -> None:
    await two_desk_story(http, limited.base)
    ws_url = limited.ws + "?tags=sport"
    async with (
        websockets.connect(ws_url, additional_headers=PARTNER) as partner1,
        websockets.connect(ws_url, additional_headers=PARTNER) as partner2,
        websockets.connect(limited.ws + "?tags=*", additional_headers=STAFF) as staff,
        http.get(f"{limited.base}/v1/sse?tags=sport&token=partner") as sse,
    ):
        for ws in (partner1, partner2, staff):
            assert (await recv(ws))["type"] == "subscribed"
        assert sse.status == 200
        kill = await withdraw(http, limited.base, "deal")
        narrowed = {**kill, "tags": ["sport"]}
        assert await next_item(partner1) == narrowed
        assert await next_item(partner2) == narrowed
        assert await next_item(staff) == kill
        assert await sse_items(sse, 1) == [narrowed]


async def test_withdrawal_tags_are_narrowed_in_replays_from_memory_and_from_redis(
    make_server: ServerFactory, partner_file: Path, http: aiohttp.ClientSession
) -> None:
    first = await make_server(entitlements=partner_file, subscriber_tokens=("staff",))
    await two_desk_story(http, first.base)
    kill = await withdraw(http, first.base, "deal")
    narrowed = {**kill, "tags": ["sport"]}
    # ``first`` has the withdrawal in memory; ``later`` started after it, so a
    # resume from 0 reads Redis.
    later = await make_server(entitlements=partner_file, subscriber_tokens=("staff",))
    for server in (first, later):
        for query in ("?tags=sport&since=0", "?tags=sport&backfill=10"):
            async with websockets.connect(server.ws + query, additional_headers=PARTNER) as ws:
                assert (await recv(ws))["type"] == "subscribed"
                assert await next_item(ws) == narrowed, (server.base, query)
        async with http.get(f"{server.base}/v1/sse?tags=sport&since=0&token=partner") as sse:
            assert await sse_items(sse, 1) == [narrowed]
        async with websockets.connect(
            server.ws + "?tags=*&since=0", additional_headers=STAFF
        ) as ws:
            assert (await recv(ws))["type"] == "subscribed"
            assert await next_item(ws) == kill


def test_a_narrowed_withdrawal_is_built_once_per_grant() -> None:
    """Connections sharing a grant share one copy (and so its cached frames)."""
    json = b'{"id":"5-0","guid":"g","version":3,"pubstatus":"canceled","tags":["a","b/c"]}'
    kill = Entry("5-0", ("a", "b/c"), 1, "g", json, withdrawal=True)
    grant = frozenset({"b"})
    view = kill.narrowed(grant, lambda t: t.startswith("b/"))
    assert view is not None and orjson.loads(view.json)["tags"] == ["b/c"]
    assert kill.narrowed(grant, lambda t: t.startswith("b/")) is view
    assert view.ws_frame is view.ws_frame  # cached, not rebuilt per connection
    assert kill.narrowed(frozenset({"a", "b"}), lambda t: True) is kill


# ---- 6: metrics name no tag, and can require a token --------------------------


async def test_metrics_carry_no_client_chosen_label(
    server: Server, http: aiohttp.ClientSession
) -> None:
    async with websockets.connect(server.ws + "?tags=world/europe/secret-deal") as ws:
        assert (await recv(ws))["type"] == "subscribed"
        # Only a fixed set of methods is named (llhttp refuses made-up ones
        # before any handler, but the pure-Python parser passes them on).
        async with http.request("PROPFIND", server.base + "/v1/items") as resp:
            assert resp.status == 405
        status, raw = await text(http, server.base + "/metrics", {})
    assert status == 200
    assert "secret" not in raw.lower() and "world" not in raw
    assert "wire_subscribed_tags 1.0" in raw and "wire_tag_subscribers_max 1.0" in raw
    assert 'method="other"' in raw and "PROPFIND" not in raw


async def test_metrics_token_is_required_when_set(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    server = await make_server(metrics_token="scrape-me")
    for headers in ({}, {"Authorization": "Bearer wrong"}, AUTH):
        status, body = await get_json(http, server.base + "/metrics", headers=headers)
        assert status == 401 and body["error"]["code"] == "unauthorized", headers
    status, raw = await text(http, server.base + "/metrics", {"Authorization": "Bearer scrape-me"})
    assert status == 200 and "wire_connections" in raw


# ---- 7: an editor token reads everywhere a reader can -------------------------


async def test_editor_token_reads_websocket_and_sse_on_a_wire_with_tokens(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    server = await make_server(subscriber_tokens=("staff",))
    async with (
        websockets.connect(server.ws + "?tags=world", additional_headers=AUTH) as ws,
        http.get(f"{server.base}/v1/sse?tags=world&token={EDITOR_TOKEN}") as sse,
    ):
        assert (await recv(ws))["type"] == "subscribed"
        assert sse.status == 200
        _, published = await post(http, server.base, item("For the desk"))
        assert await next_item(ws) == published["item"]
        assert await sse_items(sse, 1) == [published["item"]]
    async with http.get(f"{server.base}/v1/sse?tags=world") as refused:
        assert refused.status == 401


# ---- 13: every history read has a scan budget ---------------------------------

BUDGET = 1000
BULK = 12_000
RARE_EVERY = 997  # a matching item now and then, at irregular page offsets


@pytest.fixture
async def bulk(redis_url: str) -> AsyncIterator[list[str]]:
    """12,000 items, every 997th tagged ``rare``; yields the rare ones' ids, oldest first.

    The rare items go through the store's publish; the filler between them is
    appended in pipelines (stored exactly as publish stores a first version),
    which is 20 times faster on a loaded test machine.
    """
    redis = connect(redis_url)
    store = Store(redis, Settings(redis_url=redis_url))
    rare: list[str] = []
    pipe = redis.pipeline(transaction=False)
    for i in range(BULK):
        if i % RARE_EVERY == 5:
            await pipe.execute()
            rare.append((await store.publish(parse_submission(item(f"r{i}", ["rare"])))).id)
            continue
        sub = parse_submission(item(f"n{i}", ["common"]))
        stored = first_version(sub, published_now())
        pipe.xadd(keys.STREAM, {"j": stored, "t": "common", "u": 5, "g": sub.guid})
        if len(pipe) >= 1000:
            await pipe.execute()
    await pipe.execute()
    yield rare
    await redis.aclose()


async def follow(
    http: aiohttp.ClientSession, base: str, direction: str, **params: str
) -> tuple[list[str], int]:
    """Follow ``next`` cursors (as ``direction``) to the end; (item ids, requests made)."""
    ids: list[str] = []
    requests = 0
    while True:
        status, body = await get_json(http, f"{base}/v1/items", params=params)
        requests += 1
        assert status == 200
        ids += [i["id"] for i in body["items"]]
        if "next" not in body:
            return ids, requests
        params[direction] = body["next"]


async def test_a_read_that_matches_nothing_stops_at_the_budget_with_a_cursor(
    make_server: ServerFactory, bulk: list[str], http: aiohttp.ClientSession
) -> None:
    server = await make_server(scan_budget=BUDGET)
    # The id of the BUDGET-th newest entry, read in two pages of BUDGET / 2.
    _, page = await get_json(http, f"{server.base}/v1/items?limit={BUDGET // 2}")
    _, page = await get_json(
        http, f"{server.base}/v1/items?limit={BUDGET // 2}&before={page['next']}"
    )
    newest = [i["id"] for i in page["items"]]
    status, body = await get_json(http, f"{server.base}/v1/items?tags=nothing-here&limit=1")
    # It read exactly the newest BUDGET entries, found nothing, and says where it stopped.
    assert status == 200 and body == {"items": [], "next": newest[-1]}
    status, body = await get_json(http, f"{server.base}/v1/items?tags=nothing-here&after=0")
    assert status == 200 and body["items"] == [] and "next" in body


async def test_following_cursors_returns_every_match_once_in_both_directions(
    make_server: ServerFactory, bulk: list[str], http: aiohttp.ClientSession
) -> None:
    server = await make_server(scan_budget=BUDGET)
    ids, requests = await follow(http, server.base, "before", tags="rare", limit="5")
    assert ids == bulk[::-1]
    assert requests >= BULK // BUDGET  # each read stopped at the budget
    ids, _ = await follow(http, server.base, "after", tags="rare", limit="5", after="0")
    assert ids == bulk
    # Pages that end at the limit hand over a cursor too.
    ids, _ = await follow(http, server.base, "after", tags="rare,common", limit="500", after="0")
    assert len(ids) == BULK and len(set(ids)) == BULK


async def test_a_since_resume_is_complete_whatever_the_budget(
    make_server: ServerFactory, bulk: list[str], http: aiohttp.ClientSession
) -> None:
    server = await make_server(scan_budget=BUDGET)
    async with websockets.connect(server.ws + "?tags=rare&since=0") as ws:
        assert (await recv(ws))["type"] == "subscribed"
        got = [(await next_item(ws))["id"] for _ in bulk]
    assert got == bulk


async def test_wire_export_follows_the_cursor_past_short_pages(
    make_server: ServerFactory, bulk: list[str]
) -> None:
    """A page cut short by the budget is not the end: export must go on to the last match."""
    server = await make_server(scan_budget=BUDGET)
    code, docs, err = await run_export(server.base, "--tags", "rare", "--page-size", "5")
    assert code == 0, err
    assert [d["id"] for d in docs] == bulk


async def test_after_and_before_together_are_refused(
    server: Server, http: aiohttp.ClientSession
) -> None:
    status, body = await get_json(http, f"{server.base}/v1/items?after=1-0&before=2-0")
    assert status == 400 and body["error"]["field"] == "before"
    status, body = await get_json(http, f"{server.base}/v1/items?before=x")
    assert status == 400 and body["error"]["field"] == "before"


async def test_before_the_first_possible_id_is_an_empty_page_not_an_error(
    server: Server, http: aiohttp.ClientSession
) -> None:
    await publish(http, server.base, "Anything")
    for cursor in ("0", "0-0"):
        status, body = await get_json(http, f"{server.base}/v1/items?before={cursor}")
        assert (status, body) == (200, {"items": []})
