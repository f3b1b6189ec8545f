"""``GET /v1/embargoes`` a page at a time, through the real API and a real Redis.

A listing was one read of the whole schedule: an editor with a hundred
thousand pending items made every listing answer all of them at once. It is
bounded now (``?limit=``, 50 by default, at most 500) and goes on with
``?after=<next>``: every pending item exactly once, soonest first, however
items are released or cancelled between pages.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
import redis.asyncio as redis

from tests.conftest import Server
from tests.support import EDITOR_TOKEN, get_json, item, post
from wire.storage import keys

AUTH = {"Authorization": f"Bearer {EDITOR_TOKEN}"}


def _later(minutes: float) -> str:
    return (datetime.now(UTC) + timedelta(minutes=minutes)).isoformat()


async def _embargo(http: aiohttp.ClientSession, base: str, guid: str, until: str) -> None:
    status, body = await post(http, base, item(guid, ["desk"], guid=guid, embargo_until=until))
    assert status == 202, body


async def _pages(
    http: aiohttp.ClientSession, base: str, limit: int, between: Any = None
) -> list[list[str]]:
    """Every page's guids, following ``next``; ``between(page)`` runs after each page."""
    pages: list[list[str]] = []
    query = f"?limit={limit}"
    while True:
        status, body = await get_json(http, f"{base}/v1/embargoes{query}", headers=AUTH)
        assert status == 200, body
        pages.append([p["guid"] for p in body["embargoes"]])
        assert len(pages) < 100, "next never ended"
        if between is not None:
            await between(pages[-1])
        if "next" not in body:
            return pages
        query = f"?limit={limit}&after={body['next']}"


async def test_a_listing_goes_page_by_page_soonest_first(
    server: Server, http: aiohttp.ClientSession
) -> None:
    # Three due times, in an order unlike the guids' or the members' order.
    guids = [f"e{n:03d}" for n in range(120)]
    await asyncio.gather(
        *(_embargo(http, server.base, g, _later(30 + (n * 7) % 3)) for n, g in enumerate(guids))
    )
    pages = await _pages(http, server.base, 50)
    assert [len(p) for p in pages] == [50, 50, 20]
    listed = [g for page in pages for g in page]
    assert sorted(listed) == guids  # each once
    due = {g: (n * 7) % 3 for n, g in enumerate(guids)}
    assert [due[g] for g in listed] == sorted(due[g] for g in listed)  # soonest first
    _, first = await get_json(http, f"{server.base}/v1/embargoes", headers=AUTH)
    assert [p["guid"] for p in first["embargoes"]] == listed[:50]  # 50 by default


async def test_items_cancelled_between_pages_cost_no_other_item_its_place(
    server: Server, http: aiohttp.ClientSession
) -> None:
    """All due at the same moment: the order within it is the schedule's own.
    After each page its last item and another not yet listed are cancelled;
    the rest are each listed exactly once."""
    same = _later(30)
    guids = [f"s{n:02d}" for n in range(40)]
    await asyncio.gather(*(_embargo(http, server.base, g, same) for g in guids))
    cancelled: list[str] = []
    seen: list[str] = []

    async def cancel(page: list[str]) -> None:
        seen.extend(page)
        unseen = [g for g in guids if g not in seen and g not in cancelled]
        for guid in page[-1:] + unseen[-1:]:
            async with http.delete(f"{server.base}/v1/embargoes/{guid}", headers=AUTH) as resp:
                assert resp.status == 200
            cancelled.append(guid)

    pages = await _pages(http, server.base, 7, between=cancel)
    listed = [g for page in pages for g in page]
    assert len(listed) == len(set(listed))
    assert set(listed) == set(guids) - {g for g in cancelled if g not in listed}


@pytest.mark.parametrize(
    "query",
    [
        *("after=", "after=12", "after=x~AAAA", "after=nan~AAAA", "after=1~***", "after=1~A"),
        *("limit=0", "limit=501"),
    ],
)
async def test_a_bad_page_is_a_400_naming_the_parameter(
    server: Server, http: aiohttp.ClientSession, query: str
) -> None:
    status, body = await get_json(http, f"{server.base}/v1/embargoes?{query}", headers=AUTH)
    assert status == 400
    assert body["error"]["field"] == query.partition("=")[0]


async def test_a_damaged_schedule_member_is_skipped_not_a_500(
    server: Server, http: aiohttp.ClientSession
) -> None:
    """Redis data written by hand: a schedule member that is not a pending item's hash."""
    await _embargo(http, server.base, "good", _later(30))
    client = redis.Redis.from_url(server.settings.redis_url or "")
    try:
        await client.set(keys.embargo("string"), "not a hash")
        when = (datetime.now(UTC) + timedelta(minutes=20)).timestamp() * 1000
        await client.zadd(keys.EMBARGOES, {keys.embargo("string"): when})
        await client.zadd(keys.EMBARGOES, {"no such key": when})
        pages = await _pages(http, server.base, 1)
    finally:
        await client.aclose()
    assert [g for page in pages for g in page] == ["good"]


async def test_a_page_ending_at_a_long_damaged_member_goes_on(
    server: Server, http: aiohttp.ClientSession
) -> None:
    """Redis data written by hand: schedule members longer than a cursor can
    carry (the wire's own are 71 bytes), some sharing their first 300 bytes,
    and one at a score Redis writes with an exponent. Each page ends at one of
    them (limit=1), and its ``next`` still goes on: every pending item is
    listed once (was a 400 for the ``next`` the page before had written)."""
    await _embargo(http, server.base, "before", _later(10))
    await _embargo(http, server.base, "after", _later(30))
    client = redis.Redis.from_url(server.settings.redis_url or "")
    try:
        when = (datetime.now(UTC) + timedelta(minutes=20)).timestamp() * 1000
        long = {b"x" * 300 + bytes([n]) * n: when for n in range(1, 4)}
        await client.zadd(keys.EMBARGOES, {**long, b"y" * 500: when + 0.5, b"z": 1e20})
        pages = await _pages(http, server.base, 1)
    finally:
        await client.aclose()
    assert [g for page in pages for g in page] == ["before", "after"]
