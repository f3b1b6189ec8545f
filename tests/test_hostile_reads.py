"""Hostile reads: what a partner token or a careless client gets from the read paths.

Real Redis, real wire apps on loopback, real HTTP: a version outside a
token's grant must not leak through derived data (the Atom feed's
``published``), and bad or odd requests to the event stream (``HEAD``, an
empty ``tags=``, a bad ``Last-Event-ID``) get a clear answer, never a
corrupted connection or a stream that can never send anything.
"""

from __future__ import annotations

import asyncio
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import Server, ServerFactory
from tests.support import (
    EDITOR_TOKEN,
    WireProcess,
    free_port,
    get_json,
    publish,
    sse_events,
    wait_for,
)

ATOM = "{http://www.w3.org/2005/Atom}"
PARTNER = {"Authorization": "Bearer partner"}
STAFF = {"Authorization": "Bearer staff"}


@pytest.fixture
async def limited(make_server: ServerFactory, partner_file: Path) -> Server:
    """A wire with a sport-only partner token and an unlimited, named staff token."""
    return await make_server(entitlements=partner_file, subscriber_tokens=("Staff:staff",))


def stream_ms(item: dict[str, Any]) -> int:
    return int(item["id"].split("-")[0])


async def atom_published(
    http: aiohttp.ClientSession, url: str, headers: dict[str, str]
) -> dict[str, str]:
    """Entry id -> ``<published>`` of an Atom feed."""
    async with http.get(url, headers=headers) as resp:
        assert resp.status == 200
        feed = ET.fromstring(await resp.read())
    return {
        e.findtext(f"{ATOM}id", ""): e.findtext(f"{ATOM}published", "")
        for e in feed.iter(f"{ATOM}entry")
    }


# ---- the Atom feed's <published> of a story whose first version is outside the grant --


async def test_atom_published_never_tells_a_partner_when_a_version_outside_its_grant_ran(
    limited: Server, http: aiohttp.ClientSession
) -> None:
    v1 = await publish(http, limited.base, "Cabinet reshuffle", ["politics"], guid="move")
    # Version 2 must carry another time than version 1, or the leak cannot show.
    await wait_for(lambda: time.time() * 1000 > stream_ms(v1) + 2, "the clock to move on")
    v2 = await publish(http, limited.base, "Minister joins club board", ["sport"], guid="move")
    assert v2["version"] == 2 and v2["published_at"] != v1["published_at"]
    entry = f"urn:wire:item:{v2['id']}"
    # The partner never saw version 1: the feed must not tell it when that ran.
    partner = await atom_published(http, f"{limited.base}/v1/feed.atom", PARTNER)
    assert partner == {entry: v2["published_at"]}
    # As the ninjs read of the same item does: no firstCreated from outside the grant.
    _, doc = await get_json(
        http, f"{limited.base}/v1/items/{v2['id']}?format=ninjs", headers=PARTNER
    )
    assert doc.get("firstCreated") in (None, v2["published_at"])
    # An unlimited reader still gets the time the story first ran.
    staff = await atom_published(http, f"{limited.base}/v1/feed.atom?tags=sport", STAFF)
    assert staff == {entry: v1["published_at"]}


# ---- HEAD /v1/sse -------------------------------------------------------------------


async def read_head(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)


async def test_head_of_the_event_stream_has_no_body_and_leaves_the_connection_usable(
    limited: Server,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", limited.settings.port)
    try:
        writer.write(
            b"HEAD /v1/sse?tags=sport HTTP/1.1\r\nHost: wire\r\n"
            b"Authorization: Bearer partner\r\n\r\n"
        )
        head = await read_head(reader)
        assert head.startswith(b"HTTP/1.1 200 "), head
        assert b"text/event-stream" in head
        # The same connection answers the next request: nothing was written after
        # the HEAD response's headers (a HEAD response has no body).
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: wire\r\n\r\n")
        following = await asyncio.wait_for(reader.readline(), 5)
        assert following.startswith(b"HTTP/1.1 200 "), following
    finally:
        writer.close()
    # A HEAD is admitted like a GET: outside the grant it is refused the same way.
    async with aiohttp.ClientSession() as http:
        url = f"{limited.base}/v1/sse?tags=politics"
        async with http.head(url, headers=PARTNER) as resp:
            assert resp.status == 403


# ---- an empty tags= on the event stream ----------------------------------------------


async def test_an_empty_tags_parameter_on_the_event_stream_means_everything(
    limited: Server, http: aiohttp.ClientSession
) -> None:
    for query in ("tags=", "tags=,%20,"):
        async with http.get(f"{limited.base}/v1/sse?{query}", headers=STAFF) as sse:
            assert sse.status == 200
            [(name, subscribed)] = await sse_events(sse, 1)
            assert name == "subscribed" and subscribed["tags"] == ["*"], query
            published = await publish(http, limited.base, "Goal", ["sport"])
            assert await sse_events(sse, 1) == [("item", published)]
    # For a partner, empty is * as absent is: refused, with a clear error, not a dead stream.
    status, body = await get_json(http, f"{limited.base}/v1/sse?tags=", headers=PARTNER)
    assert status == 403 and body["error"]["field"] == "tags"


# ---- a bad Last-Event-ID is named as such ------------------------------------------


async def test_a_bad_last_event_id_is_refused_naming_the_header(
    limited: Server, http: aiohttp.ClientSession
) -> None:
    for bad in ("abc", "-1", "1 2", "18446744073709551615-18446744073709551615"):
        headers = {**STAFF, "Last-Event-ID": bad}
        status, body = await get_json(http, f"{limited.base}/v1/sse?tags=sport", headers=headers)
        assert status == 400, bad
        assert body["error"]["code"] == "invalid_field"
        assert body["error"]["field"] == "Last-Event-ID", body
        assert "Last-Event-ID" in body["error"]["message"], body


# ---- the next cursor of a budget-bounded read ---------------------------------------


async def test_a_partners_cursor_past_hidden_items_says_nothing_of_them_and_loses_nothing(
    make_server: ServerFactory, partner_file: Path, http: aiohttp.ClientSession
) -> None:
    """A cursor is a position in the one stream every reader shares (docs/protocol.md):
    a scan out of budget stops at the last entry it read, maybe one outside the
    grant. That id answers 404 like a missing one, and reading on from it finds
    every visible item once."""
    server = await make_server(entitlements=partner_file, scan_budget=3)
    first = await publish(http, server.base, "Match report", ["sport"])
    for n in range(5):
        await publish(http, server.base, f"Memo {n}", ["politics"])
    await publish(http, server.base, "Final score", ["sport"])
    cursor, seen = first["id"], []
    for _ in range(10):
        _, page = await get_json(http, f"{server.base}/v1/items?after={cursor}", headers=PARTNER)
        seen += [item["title"] for item in page["items"]]
        if "next" not in page:
            break
        cursor = page["next"]
        status, body = await get_json(http, f"{server.base}/v1/items/{cursor}", headers=PARTNER)
        assert status == 404 or body["item"]["tags"] == ["sport"], body
    assert seen == ["Final score"]


# ---- the delivery ledger records what a HEAD never delivered ------------------------


async def test_a_head_request_is_not_recorded_as_a_delivery(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    server = await make_server(subscriber_tokens=("Staff:staff",), admin_tokens=("admin",))
    story = await publish(http, server.base, "Quake", ["world"], guid="quake")
    for path in ("/v1/items", "/v1/feed.atom", "/v1/stories/quake", f"/v1/items/{story['id']}"):
        async with http.head(server.base + path, headers=STAFF) as resp:
            assert resp.status == 200, path
            assert await resp.read() == b""
    # The admin read flushes this process's records first: what it says is complete.
    url = f"{server.base}/v1/stories/quake/deliveries"
    _, ledger = await get_json(http, url, headers={"Authorization": "Bearer admin"})
    assert ledger["story"]["deliveries"] == [] and ledger["story"]["delivered_to"] == [], ledger
    # A GET is a delivery, and is recorded.
    status, _ = await get_json(http, f"{server.base}/v1/stories/quake", headers=STAFF)
    assert status == 200
    _, ledger = await get_json(http, url, headers={"Authorization": "Bearer admin"})
    assert ledger["story"]["delivered_to"] == ["Staff"]


# ---- the connection cap's 503, read by a dashboard on another origin -----------------


async def test_the_connection_caps_503_is_readable_by_a_page_on_another_origin(
    redis_url: str,
) -> None:
    proc = WireProcess(
        ["run", "--redis", redis_url],
        {"WIRE_EDITOR_TOKENS": EDITOR_TOKEN, "WIRE_MAX_HTTP_CONNECTIONS": "2"},
        free_port(),
    ).start()
    held: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        await proc.ready()
        ask = b"GET /v1/items HTTP/1.1\r\nHost: wire\r\nOrigin: https://dash.example\r\n\r\n"
        refused = b""
        # Kept-alive connections are held open until one beyond the cap is refused
        # (the readiness poller's may still be counted: a few more than 2 at most).
        for _ in range(6):
            reader, writer = await asyncio.open_connection("127.0.0.1", proc.port)
            held.append((reader, writer))
            writer.write(ask)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            if head.startswith(b"HTTP/1.1 503 "):
                refused = head
                break
            assert head.startswith(b"HTTP/1.1 200 "), head
            assert b"Access-Control-Allow-Origin: *" in head
        assert refused, "no connection was refused"
        assert b"Retry-After: 1" in refused
        assert b"Access-Control-Allow-Origin: *\r\n" in refused, refused
        assert b"Retry-After" in refused.split(b"Access-Control-Expose-Headers:")[1]
    finally:
        for _, writer in held:
            writer.close()
        proc.kill()


# ---- too many tags on the event stream: refused, not a stream that only ends -------


async def test_too_many_tags_on_the_event_stream_is_refused_before_it_starts(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    """A stream that starts and then ends has an EventSource reconnect every second
    forever (``retry: 1000``), each time to be refused again; a 4xx stops it."""
    server = await make_server(max_tags=3)
    headers = {"Origin": "https://dash.example"}
    async with http.get(f"{server.base}/v1/sse?tags=a,b,c,d", headers=headers) as resp:
        assert resp.status == 400, await resp.read()
        assert resp.headers["Access-Control-Allow-Origin"] == "*"
        error = (await resp.json())["error"]
    assert error["code"] == "too_many_tags" and error["field"] == "tags"
    # Duplicates count once, as on a WebSocket: three distinct tags are fine.
    async with http.get(f"{server.base}/v1/sse?tags=a,b,c,A,b", headers=headers) as resp:
        assert resp.status == 200
        [(name, subscribed)] = await sse_events(resp, 1)
        assert name == "subscribed" and sorted(subscribed["tags"]) == ["a", "b", "c"]
