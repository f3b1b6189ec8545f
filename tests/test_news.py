"""News semantics through the real interfaces: versions, withdrawals, compaction,
embargoes and entitlements, against a real Redis."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import websockets

from tests.conftest import Server, ServerFactory
from tests.support import EDITOR_TOKEN, WireProcess, free_port, get_json, item, post

AUTH = {"Authorization": f"Bearer {EDITOR_TOKEN}"}


async def recv(ws: Any, wait: float = 5.0) -> dict[str, Any]:
    msg: dict[str, Any] = orjson.loads(await asyncio.wait_for(ws.recv(), wait))
    return msg


async def items_until(ws: Any, count: int) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    while len(got) < count:
        msg = await recv(ws)
        if msg["type"] == "item":
            got.append(msg["item"])
    return got


async def withdraw(
    http: aiohttp.ClientSession, base: str, guid: str, reason: str
) -> tuple[int, Any]:
    async with http.post(
        f"{base}/v1/stories/{guid}/withdraw", json={"reason": reason}, headers=AUTH
    ) as resp:
        return resp.status, await resp.json()


async def test_concurrent_publishes_of_one_guid_get_consecutive_versions(
    server: Server, http: aiohttp.ClientSession
) -> None:
    bodies = [item(f"Take {i}", ["world"], guid="story-1") for i in range(10)]
    results = await asyncio.gather(*(post(http, server.base, b) for b in bodies))
    assert all(status == 201 for status, _ in results)
    versions = sorted(body["item"]["version"] for _, body in results)
    assert versions == list(range(1, 11))
    marks = {body["item"]["version"]: body["item"]["mark"] for _, body in results}
    assert marks[1] is None and all(marks[v] == "Updated" for v in range(2, 11))


async def test_editor_mark_wins_over_updated_and_story_lists_versions(
    server: Server, http: aiohttp.ClientSession
) -> None:
    await post(http, server.base, item("First", guid="s2"))
    _, second = await post(http, server.base, item("Second", guid="s2", mark="Exclusive"))
    assert second["item"]["mark"] == "Exclusive"
    status, body = await get_json(http, f"{server.base}/v1/stories/s2")
    assert status == 200
    story = body["story"]
    assert story["guid"] == "s2"
    assert [v["title"] for v in story["versions"]] == ["First", "Second"]
    assert story["current"] == second["item"]
    status, body = await get_json(http, f"{server.base}/v1/stories/nope")
    assert status == 404 and body["error"]["code"] == "not_found"


async def test_withdrawal_reaches_live_and_resuming_subscribers(
    server: Server, http: aiohttp.ClientSession
) -> None:
    _, before = await post(http, server.base, item("Unrelated", ["sport"]))
    _, v1 = await post(http, server.base, item("Claim", ["politics"], guid="kill-me"))
    await post(http, server.base, item("Claim, updated", ["world"], guid="kill-me"))
    async with websockets.connect(server.ws + "?tags=politics") as live:
        assert (await recv(live))["type"] == "subscribed"
        status, body = await withdraw(http, server.base, "kill-me", "Legal advice")
        assert status == 200
        kill = body["item"]
        assert kill["pubstatus"] == "canceled" and kill["version"] == 3
        assert sorted(kill["tags"]) == ["politics", "world"]
        assert (await items_until(live, 1)) == [kill]
    since = before["item"]["id"]
    async with websockets.connect(f"{server.ws}?tags=politics&since={since}") as resumed:
        got = await items_until(resumed, 1)
        assert got == [kill], "the withdrawn version must not be replayed, only its kill"
    # History reads keep the withdrawal and never the withdrawn text.
    _, listing = await get_json(http, f"{server.base}/v1/items?tags=politics,world")
    assert [i["id"] for i in listing["items"]] == [kill["id"]]
    status, gone = await get_json(http, f"{server.base}/v1/items/{v1['item']['id']}")
    assert status == 410 and gone["error"]["code"] == "withdrawn"
    _, story = await get_json(http, f"{server.base}/v1/stories/kill-me")
    text = orjson.dumps(story).decode()
    assert "Claim" not in text and story["story"]["current"] == kill
    # A repeat is idempotent; publishing under a withdrawn guid is refused.
    status, again = await withdraw(http, server.base, "kill-me", "again")
    assert status == 200 and again["item"] == kill
    status, refused = await post(http, server.base, item("Back", guid="kill-me"))
    assert status == 409 and refused["error"]["code"] == "story_withdrawn"
    status, _ = await withdraw(http, server.base, "never-was", "x")
    assert status == 404


async def test_compact_catch_up_sends_latest_version_per_story(
    server: Server, http: aiohttp.ClientSession
) -> None:
    _, start = await post(http, server.base, item("Start", ["world"]))
    for i in range(3):
        await post(http, server.base, item(f"A v{i + 1}", ["world"], guid="a"))
    _, b = await post(http, server.base, item("B", ["world"], guid="b"))
    _, a4 = await post(http, server.base, item("A v4", ["world"], guid="a"))
    since = start["item"]["id"]
    async with websockets.connect(server.ws) as ws:
        await ws.send(
            orjson.dumps(
                {"type": "subscribe", "tags": ["world"], "since": since, "compact": True}
            ).decode()
        )
        assert (await recv(ws))["type"] == "subscribed"
        got = await items_until(ws, 2)
        assert [g["id"] for g in got] == [b["item"]["id"], a4["item"]["id"]]
        _, late = await post(http, server.base, item("Live", ["world"], guid="a"))
        assert (await items_until(ws, 1)) == [late["item"]]


def _soon(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


async def test_embargo_is_invisible_until_released_once(
    server: Server, http: aiohttp.ClientSession
) -> None:
    async with websockets.connect(server.ws + "?tags=markets") as ws:
        assert (await recv(ws))["type"] == "subscribed"
        status, body = await post(
            http,
            server.base,
            item("Rates cut", ["markets"], guid="rates", embargo_until=_soon(1.0)),
        )
        assert status == 202
        assert "id" not in body["item"] and body["item"]["pubstatus"] == "withheld"
        _, listing = await get_json(http, f"{server.base}/v1/items?tags=markets")
        assert listing["items"] == []
        async with http.get(f"{server.base}/v1/embargoes", headers=AUTH) as resp:
            assert [p["guid"] for p in (await resp.json())["embargoes"]] == ["rates"]
        released = (await items_until(ws, 1))[0]
        assert released["title"] == "Rates cut" and released["version"] == 1
    _, story = await get_json(http, f"{server.base}/v1/stories/rates")
    assert len(story["story"]["versions"]) == 1
    async with http.get(f"{server.base}/v1/embargoes", headers=AUTH) as resp:
        assert (await resp.json())["embargoes"] == []


async def test_cancelled_embargo_never_appears(server: Server, http: aiohttp.ClientSession) -> None:
    status, _ = await post(
        http, server.base, item("Never", ["markets"], guid="never", embargo_until=_soon(0.6))
    )
    assert status == 202
    async with http.delete(f"{server.base}/v1/embargoes/never", headers=AUTH) as resp:
        assert resp.status == 200
    async with http.delete(f"{server.base}/v1/embargoes/never", headers=AUTH) as resp:
        assert resp.status == 404
    async with http.get(f"{server.base}/v1/embargoes") as resp:
        assert resp.status == 401
    # A marker embargoed until after the cancelled one's time: once it is out,
    # the releaser has passed that time, and only the marker may be there.
    status, _ = await post(
        http, server.base, item("Marker", ["markets"], guid="marker", embargo_until=_soon(0.9))
    )
    assert status == 202
    # since=0: the marker arrives whether it was released before or after we connect.
    async with websockets.connect(server.ws + "?tags=markets&since=0") as ws:
        released = (await items_until(ws, 1))[0]
    assert released["guid"] == "marker"
    _, listing = await get_json(http, f"{server.base}/v1/items?tags=markets")
    assert [i["guid"] for i in listing["items"]] == ["marker"]
    status, _ = await get_json(http, f"{server.base}/v1/stories/never")
    assert status == 404


async def test_bad_embargo_times_are_rejected(server: Server, http: aiohttp.ClientSession) -> None:
    for value, hint in [
        ("2001-01-01T00:00:00Z", "future"),
        ("tomorrow", "ISO"),
        ("2099-01-01T00:00:00", "timezone"),
        (5, "string"),
    ]:
        status, body = await post(http, server.base, item(embargo_until=value))
        assert status == 400, value
        assert body["error"]["field"] == "embargo_until" and hint in body["error"]["message"]


@pytest.mark.fault
async def test_embargo_released_exactly_once_across_kill_9(
    redis_url: str, http: aiohttp.ClientSession
) -> None:
    env = {"WIRE_REDIS_URL": redis_url, "WIRE_EDITOR_TOKENS": EDITOR_TOKEN}
    pubs = [WireProcess(["publisher"], env, free_port()).start() for _ in range(2)]
    try:
        await asyncio.gather(*(p.ready() for p in pubs))
        due = 1.5
        for n in range(5):
            status, _ = await post(
                http,
                pubs[0].base,
                item(f"E{n}", ["markets"], guid=f"e{n}", embargo_until=_soon(due)),
            )
            assert status == 202
        await asyncio.sleep(due)  # fault injection at the due moment, not a timing check
        pubs[0].kill()
        deadline = time.monotonic() + 10
        pending: list[Any] = ["x"]
        while pending and time.monotonic() < deadline:
            async with http.get(f"{pubs[1].base}/v1/embargoes", headers=AUTH) as resp:
                pending = (await resp.json())["embargoes"]
            await asyncio.sleep(0.05)  # poll politely; the condition is what we wait on
        assert pending == []
        _, listing = await get_json(http, f"{pubs[1].base}/v1/items?tags=markets")
        assert sorted(i["guid"] for i in listing["items"]) == [f"e{n}" for n in range(5)]
    finally:
        for p in pubs:
            p.kill()


async def test_partner_token_never_sees_a_forbidden_item(
    make_server: ServerFactory, partner_file: Path, http: aiohttp.ClientSession
) -> None:
    server = await make_server(entitlements=partner_file, subscriber_tokens=("staff",))
    _, secret = await post(http, server.base, item("Cabinet leak", ["politics"], guid="pol"))
    _, match = await post(http, server.base, item("Derby", ["sport/football"]))
    partner = {"Authorization": "Bearer partner"}
    # WebSocket: a forbidden subscribe is answered, changes nothing; * is refused.
    async with websockets.connect(server.ws, additional_headers=partner) as ws:
        for tags in (["politics"], ["*"], ["sport", "politics"]):
            await ws.send(orjson.dumps({"type": "subscribe", "tags": tags}).decode())
            err = await recv(ws)
            assert err["type"] == "error" and err["code"] == "forbidden"
        await ws.send(
            orjson.dumps({"type": "subscribe", "tags": ["sport"], "backfill": 10}).decode()
        )
        assert (await recv(ws))["tags"] == ["sport"]
        assert [i["id"] for i in await items_until(ws, 1)] == [match["item"]["id"]]
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(
            server.ws + "?tags=politics&since=0", additional_headers=partner
        ):
            pass
    assert refused.value.response.status_code == 403
    # SSE and HTTP history, item and story reads.
    async with http.get(f"{server.base}/v1/sse?tags=politics", headers=partner) as resp:
        assert resp.status == 403
    status, body = await get_json(http, f"{server.base}/v1/items", headers=partner)
    assert status == 200 and [i["id"] for i in body["items"]] == [match["item"]["id"]]
    status, body = await get_json(http, server.base + "/v1/items?tags=politics", headers=partner)
    assert status == 403 and body["error"]["code"] == "forbidden"
    # An existing item or story outside the grant looks exactly like a missing one.
    for url in (f"/v1/items/{secret['item']['id']}", "/v1/stories/pol"):
        status, body = await get_json(http, server.base + url, headers=partner)
        assert status == 404 and body["error"]["code"] == "not_found", url
    # Unlimited staff tokens see everything; no token is refused.
    status, body = await get_json(
        http,
        f"{server.base}/v1/items/{secret['item']['id']}",
        headers={"Authorization": "Bearer staff"},
    )
    assert status == 200
    status, _ = await get_json(http, f"{server.base}/v1/items")
    assert status == 401


async def test_workers_keep_every_setting_given_as_a_flag(
    redis_url: str, partner_file: Path, http: aiohttp.ClientSession
) -> None:
    """A limit given only as a flag must hold in every worker process."""
    gw = WireProcess(
        ["gateway", "--workers", "2", "--redis", redis_url, "--entitlements", str(partner_file)],
        {},
        free_port(),
    ).start()
    pub = WireProcess(
        ["publisher", "--workers", "2", "--redis", redis_url],
        {"WIRE_EDITOR_TOKENS": EDITOR_TOKEN},
        free_port(),
    ).start()
    try:
        await gw.ready()
        await pub.ready()
        status, _ = await post(http, pub.base, item("Via workers", ["sport"]))
        assert status == 201
        # The kernel spreads connections over the workers: ask enough times
        # that both answer, and every answer must refuse.
        for _ in range(20):
            async with http.get(
                f"{gw.base}/v1/sse?tags=politics", headers={"Authorization": "Bearer partner"}
            ) as resp:
                assert resp.status == 403
            async with http.get(f"{gw.base}/v1/sse?tags=sport") as resp:
                assert resp.status == 401
    finally:
        for proc in (gw, pub):
            assert proc.terminate() == 0
