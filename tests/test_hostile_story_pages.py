"""Hostile-client review of the paged story read (``GET /v1/stories/<guid>``).

Every test runs against the real HTTP API on loopback and a real Redis, and
measures Redis's own work with ``INFO`` (bytes sent, commands run).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import orjson
import redis

from tests.conftest import Server, ServerFactory
from tests.support import EDITOR_TOKEN, publish, sport_partner
from wire.storage.store import ANSWER_BYTES

AUTH = {"Authorization": f"Bearer {EDITOR_TOKEN}"}
PARTNER = {"Authorization": "Bearer partner"}
#: A body of about 400 KB (4-byte characters, at the 100,000 character limit).
BIG = "\U0001d11e" * 99_000


async def read(
    http: aiohttp.ClientSession, server: Server, query: str, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    """GET ``/v1/stories/<query>``: the status and the raw body."""
    async with http.get(f"{server.base}/v1/stories/{query}", headers=headers or AUTH) as resp:
        return resp.status, await resp.read()


def info(server: Server, section: str) -> dict[str, Any]:
    """One section of the wire's Redis's ``INFO``."""
    assert server.settings.redis_url is not None
    client = redis.Redis.from_url(server.settings.redis_url)
    try:
        found: dict[str, Any] = client.info(section)
        return found
    finally:
        client.close()


def sent_by_redis(server: Server) -> int:
    """The bytes Redis has sent its clients so far (``total_net_output_bytes``)."""
    return int(info(server, "stats")["total_net_output_bytes"])


async def measured_read(
    http: aiohttp.ClientSession, server: Server, query: str
) -> tuple[dict[str, Any], int, int]:
    """A 200 story read: its story, the answer's length, and the bytes Redis sent."""
    start = sent_by_redis(server)
    status, raw = await read(http, server, query)
    read_bytes = sent_by_redis(server) - start
    assert status == 200, raw[:300]
    return orjson.loads(raw)["story"], len(raw), read_bytes


async def test_a_page_of_small_versions_above_big_ones_reads_about_the_budget_from_redis(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    # No gateway: nothing else reads from Redis while the story is read.
    server = await make_server(gateway=False)
    big = [await publish(http, server.base, f"Big {n}", body=BIG, guid="m") for n in range(30)]
    size = len(orjson.dumps(big[0]))
    for n in range(8):  # the newest versions are tiny: the first round sees only them
        await publish(http, server.base, f"Tiny {n}", guid="m")
    story, answered, read_bytes = await measured_read(http, server, "m?limit=500")
    # The page stops at about ANSWER_BYTES (the tiny ones and ten or so big ones)...
    assert answered < ANSWER_BYTES + 2 * size and story["older"] > 1
    # ...and so must what the read fetched: not all 30 big versions (12 MB).
    assert read_bytes < ANSWER_BYTES + 3 * size, read_bytes


async def test_an_older_page_of_big_versions_reads_only_the_page_and_the_current_one(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    server = await make_server(gateway=False)
    sent = [await publish(http, server.base, f"Big {n}", body=BIG, guid="o") for n in range(12)]
    size = len(orjson.dumps(sent[0]))
    story, _, read_bytes = await measured_read(http, server, "o?before=3&limit=1")
    assert [v["version"] for v in story["versions"]] == [2] and story["current"] == sent[-1]
    # Version 2 and the newest version are answered: fetching eight of the
    # newest (3 MB) to find the one current version is not bounded by the page.
    assert read_bytes < 3 * size, read_bytes


def xranges(server: Server) -> int:
    """XRANGE commands Redis has run so far (those inside scripts included)."""
    return int(info(server, "commandstats").get("cmdstat_xrange", {}).get("calls", 0))


async def test_a_story_wholly_outside_the_grant_costs_what_a_missing_one_does(
    make_server: ServerFactory, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    path = sport_partner(tmp_path)
    wire = await make_server(entitlements=path, subscriber_tokens=("staff",), gateway=False)
    batch = [{"title": f"Deal {n}", "tags": ["politics"], "guid": "deal"} for n in range(1000)]
    async with http.post(
        f"{wire.base}/v1/items",
        data=orjson.dumps(batch),
        headers={**AUTH, "Content-Type": "application/json"},
    ) as resp:
        assert resp.status == 200
    costs = {}
    for guid in ("deal", "nope"):
        start = xranges(wire)
        status, raw = await read(http, wire, guid, PARTNER)
        assert status == 404 and raw.replace(guid.encode(), b"X") == (
            b'{"error":{"code":"not_found","message":"no story with guid \'X\'"}}'
        )
        costs[guid] = xranges(wire) - start
    # Same status and body, but a thousand stream reads against none: ~100x
    # the time, which tells the partner the story exists outside its grant.
    assert costs["deal"] == costs["nope"], costs


async def test_older_is_left_out_when_retention_kept_nothing_older(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    # Entries of 5 KB fill a stream node each, so MAXLEN ~ 5 keeps about five.
    server = await make_server(max_items=5, gateway=False)
    for n in range(20):
        await publish(http, server.base, f"R{n}", body="x" * 5000, guid="kept")
    status, raw = await read(http, server, "kept?limit=500")
    kept = [v["version"] for v in orjson.loads(raw)["story"]["versions"]]
    assert status == 200 and kept[-1] == 20 and kept[0] > 1
    assert kept == list(range(kept[0], 21))
    # A page that ends exactly at the oldest kept version: nothing older is kept.
    status, raw = await read(http, server, f"kept?limit={len(kept)}")
    story = orjson.loads(raw)["story"]
    assert [v["version"] for v in story["versions"]] == kept
    assert "older" not in story, f"older {story['older']} names only removed versions"
