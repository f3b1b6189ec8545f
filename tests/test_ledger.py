"""The delivery ledger: who received which versions of a story, by which channel.

Everything runs through the real interfaces: named tokens (an entitlements
entry's ``name``, ``name:token`` in ``WIRE_SUBSCRIBER_TOKENS``) reading over
WebSocket, SSE, the feed and the history routes, a webhook posting to a real
aiohttp receiver, real Redis, and the admin route and ``wire ledger`` reading
the result. Flushes are short (``ledger_flush``), and every wait polls the
deliveries route for a real condition.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import websockets

from tests.conftest import Server, ServerFactory
from tests.support import (
    EDITOR_TOKEN,
    ROOT,
    Receiver,
    eventually,
    free_port,
    get_json,
    publish,
    sse_items,
    wait_for,
)
from wire.core.entitlements import Entitlements, Grant, named_token, reader_grant
from wire.core.entry import Entry
from wire.core.ledger import (
    ANONYMOUS_FIELD,
    WITHDRAWAL,
    Pending,
    Record,
    RecordKey,
    Span,
    Tally,
    aggregate,
    decode_field,
    delivered_to,
    deliveries,
    encode_field,
    merge,
    parse_records,
    rfc3339,
    trim,
)
from wire.runtime.settings import Settings
from wire.storage import keys, scripts
from wire.storage.ledger import FLUSH_ERRORS, Ledger
from wire.storage.store import connect

ADMIN = "admin-token-for-ledger"
#: Hostile partner names: a ':' (the subscriber-token separator), NUL, a
#: newline followed by what looks like a flush-script line, and JSON.
HOSTILE = ["a:b", "nul\x00name", 'x\nr 1 1 1 ["evil","websocket",1]', '["Alpha","websocket",1]']
ENTITLEMENTS = """
[[token]]
token = "alpha-token"
name = "Alpha"
tags = ["world"]

[[token]]
token = "gamma-token"
name = "Gamma"
tags = ["world"]
"""


def admin(token: str = ADMIN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def wire(make_server: ServerFactory, tmp_path: Path) -> Server:
    """A wire with named partners Alpha (entitlements), Beta (``Beta:beta-token``),
    Gamma (entitlements, for a webhook), an anonymous ``anon-token`` and admins."""
    path = tmp_path / "entitlements.toml"
    path.write_text(ENTITLEMENTS)
    return await make_server(
        entitlements=path,
        subscriber_tokens=("Beta:beta-token", "anon-token"),
        admin_tokens=(ADMIN,),
        webhook_allow_private=True,
        webhook_backoff=0.01,
        webhook_backoff_max=0.05,
        ledger_flush=0.05,
    )


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    await r.stop()


async def story_deliveries(
    http: aiohttp.ClientSession, server: Server, guid: str
) -> dict[str, Any]:
    status, body = await get_json(
        http, f"{server.base}/v1/stories/{guid}/deliveries", headers=admin()
    )
    assert status == 200, body
    found: dict[str, Any] = body["story"]
    return found


def table(story: dict[str, Any]) -> dict[tuple[str, str], tuple[list[int], bool | None]]:
    """(partner, channel) -> (versions, withdrawal reached), from a deliveries answer."""
    return {
        (d["partner"], d["channel"]): (d["versions"], d["withdrawal_reached"])
        for d in story["deliveries"]
    }


async def next_item(ws: Any) -> dict[str, Any]:
    while True:
        msg = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
        if msg["type"] == "item":
            got: dict[str, Any] = msg["item"]
            return got


async def subscribed(ws: Any) -> None:
    msg = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
    assert msg["type"] == "subscribed", msg


async def withdraw(http: aiohttp.ClientSession, base: str, guid: str) -> dict[str, Any]:
    async with http.post(
        f"{base}/v1/stories/{guid}/withdraw", json={"reason": "Legal"},
        headers=bearer(EDITOR_TOKEN),
    ) as resp:
        assert resp.status == 200
        answer: dict[str, Any] = await resp.json()
        return answer


# ---- the Done-when case -------------------------------------------------------


async def test_two_named_websocket_partners_and_a_webhook_are_exactly_the_ledger(
    wire: Server, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    async with http.post(
        wire.base + "/v1/webhooks", headers=admin(),
        json={"url": receiver.url, "tags": ["world"], "partner": "Gamma"},
    ) as resp:
        assert resp.status == 201, await resp.text()
    url = wire.ws + "?tags=world"
    async with (
        websockets.connect(url, additional_headers=bearer("alpha-token")) as alpha,
        websockets.connect(url, additional_headers=bearer("beta-token")) as beta,
        websockets.connect(url, additional_headers=bearer("anon-token")) as anon,
    ):
        for ws in (alpha, beta, anon):
            await subscribed(ws)
        v1 = await publish(http, wire.base, "First", ["world"], guid="kill-me")
        await publish(http, wire.base, "Second", ["world"], guid="kill-me")
        for ws in (alpha, beta, anon):
            assert [(await next_item(ws))["version"] for _ in range(2)] == [1, 2]
        await wait_for(lambda: len(receiver.ok()) == 2, "the webhook's two deliveries")

        def complete(story: dict[str, Any]) -> bool:
            # The deliverer records a 2xx once it has moved the cursor.
            return table(story).get(("Gamma", "webhook"), ([], None))[0] == [1, 2]

        story = await eventually(
            lambda: story_deliveries(http, wire, "kill-me"), complete, "the webhook's record"
        )
        assert table(story) == {
            ("Alpha", "websocket"): ([1, 2], None),
            ("Beta", "websocket"): ([1, 2], None),
            ("Gamma", "webhook"): ([1, 2], None),
        }
        # The anonymous subscriber is counted, not named: two versions, one connection.
        assert story["anonymous"] == 2
        assert story["withdrawn"] is False
        assert story["delivered_to"] == ["Alpha", "Beta", "Gamma"]
        row = story["deliveries"][0]
        assert row["first"] <= row["last"] and row["first"].endswith("Z")
        assert row["first"] >= v1["published_at"][:19]

        answer = await withdraw(http, wire.base, "kill-me")
        assert answer["delivered_to"] == ["Alpha", "Beta", "Gamma"]
        assert answer["item"]["pubstatus"] == "canceled"
        for ws in (alpha, beta, anon):
            assert (await next_item(ws))["pubstatus"] == "canceled"
        await wait_for(lambda: len(receiver.ok()) == 3, "the webhook's withdrawal")

        def reached(story: dict[str, Any]) -> bool:
            return all(r for _, r in table(story).values())

        story = await eventually(
            lambda: story_deliveries(http, wire, "kill-me"), reached, "withdrawal reached"
        )
        assert table(story) == {
            ("Alpha", "websocket"): ([1, 2], True),
            ("Beta", "websocket"): ([1, 2], True),
            ("Gamma", "webhook"): ([1, 2], True),
        }
        assert story["withdrawn"] is True and story["anonymous"] == 3


async def test_a_story_nobody_named_received_says_so_and_a_withdrawal_alone_names_no_one(
    wire: Server, http: aiohttp.ClientSession
) -> None:
    await publish(http, wire.base, "Quiet", ["world"], guid="quiet")
    story = await story_deliveries(http, wire, "quiet")
    assert story["deliveries"] == [] and story["delivered_to"] == []
    async with websockets.connect(
        wire.ws + "?tags=world", additional_headers=bearer("alpha-token")
    ) as alpha:
        await subscribed(alpha)
        assert (await withdraw(http, wire.base, "quiet"))["delivered_to"] == []
        await next_item(alpha)
        story = await eventually(
            lambda: story_deliveries(http, wire, "quiet"), lambda s: bool(s["deliveries"]),
            "the withdrawal's record",
        )
    # Alpha got the kill but no version: recorded, yet not among delivered_to.
    assert table(story) == {("Alpha", "websocket"): ([], True)}
    assert story["delivered_to"] == []


# ---- every channel ------------------------------------------------------------


async def test_sse_feed_and_history_reads_by_named_tokens_are_recorded_by_channel(
    wire: Server, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{wire.base}/v1/sse?tags=world&token=beta-token") as sse:
        assert sse.status == 200
        first = await publish(http, wire.base, "Via SSE", ["world"], guid="channels")
        assert (await sse_items(sse, 1))[0]["id"] == first["id"]
    await publish(http, wire.base, "Version two", ["world"], guid="channels")
    base = wire.base
    # Alpha reads the feed, the story, one item; Gamma polls /v1/items (long poll).
    async with http.get(f"{base}/v1/feed.atom?tags=world", headers=bearer("alpha-token")) as r:
        assert r.status == 200
    status, _ = await get_json(http, f"{base}/v1/stories/channels", headers=bearer("alpha-token"))
    assert status == 200
    status, body = await get_json(
        http, f"{base}/v1/items?after=0&wait=1&tags=world", headers=bearer("gamma-token")
    )
    assert status == 200 and len(body["items"]) >= 2
    status, _ = await get_json(http, f"{base}/v1/items/{first['id']}", headers=bearer("beta-token"))
    assert status == 200
    # An anonymous token's reads are not named.
    status, _ = await get_json(http, f"{base}/v1/stories/channels", headers=bearer("anon-token"))
    assert status == 200
    story = await story_deliveries(http, wire, "channels")
    async with http.get(f"{base}/metrics") as resp:
        metrics = await resp.text()
    assert "wire_ledger_dropped_records_total 0.0" in metrics
    assert "wire_ledger_records_written_total" in metrics
    status, ready = await get_json(http, f"{base}/readyz")
    assert status == 200 and ready["checks"]["task:ledger"] is True
    assert table(story) == {
        ("Alpha", "feed"): ([1, 2], None),
        ("Alpha", "history"): ([1, 2], None),
        ("Beta", "history"): ([1], None),
        ("Beta", "sse"): ([1], None),
        ("Gamma", "history"): ([1, 2], None),
    }


async def test_a_webhook_without_partner_is_named_by_its_id(
    wire: Server, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    async with http.post(
        wire.base + "/v1/webhooks", headers=admin(), json={"url": receiver.url, "tags": ["world"]}
    ) as resp:
        webhook_id = (await resp.json())["webhook"]["id"]
    await publish(http, wire.base, "Hooked", ["world"], guid="hooked")
    story = await eventually(
        lambda: story_deliveries(http, wire, "hooked"), lambda s: bool(s["deliveries"]),
        "the webhook's record",
    )
    assert table(story) == {(f"webhook:{webhook_id}", "webhook"): ([1], None)}


# ---- grants and hostile input -------------------------------------------------


async def test_only_admins_read_the_ledger_and_no_error_names_a_partner(
    wire: Server, http: aiohttp.ClientSession
) -> None:
    async with websockets.connect(
        wire.ws + "?tags=world", additional_headers=bearer("alpha-token")
    ) as alpha:
        await subscribed(alpha)
        await publish(http, wire.base, "Secret reach", ["world"], guid="guarded")
        await next_item(alpha)
    url = f"{wire.base}/v1/stories/guarded/deliveries"
    for headers in ({}, bearer(EDITOR_TOKEN), bearer("alpha-token"), bearer("anon-token")):
        async with http.get(url, headers=headers) as resp:
            assert resp.status in (401, 403)
            text = await resp.text()
            assert orjson.loads(text)["error"]["code"]
            assert "Alpha" not in text
    # Reader routes about the story never name who received it.
    for path in ("/v1/stories/guarded", "/v1/items?tags=world", "/v1/feed.atom"):
        async with http.get(wire.base + path, headers=bearer("beta-token")) as resp:
            assert resp.status == 200 and "Alpha" not in await resp.text()
    status, body = await get_json(
        http, f"{wire.base}/v1/stories/no-such-story/deliveries", headers=admin()
    )
    assert status == 404 and body["error"]["code"] == "not_found"
    status, body = await get_json(
        http, f"{wire.base}/v1/stories/%00%22x/deliveries", headers=admin()
    )
    assert status == 404 and body["error"]["code"] == "not_found"


async def test_hostile_partner_names_and_guids_cannot_reach_another_storys_records(
    make_server: ServerFactory, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    path = tmp_path / "entitlements.toml"
    path.write_text("".join(
        f"[[token]]\ntoken = \"t{i}\"\nname = {orjson.dumps(name).decode()}\ntags = [\"world\"]\n"
        for i, name in enumerate(HOSTILE)
    ))
    server = await make_server(entitlements=path, admin_tokens=(ADMIN,), ledger_flush=0.05)
    # Guids whose text is another key's suffix or looks like a record.
    guids = ["s", "s:ledger", "x:1", "story@a=b"]
    for i, guid in enumerate(guids):
        await publish(http, server.base, f"Story {i}", ["world"], guid=guid)
    # Each hostile partner reads exactly one story.
    for i, guid in enumerate(guids):
        status, _ = await get_json(
            http, f"{server.base}/v1/stories/{guid}", headers=bearer(f"t{i}")
        )
        assert status == 200
    for i, guid in enumerate(guids):
        story = await story_deliveries(http, server, guid)
        assert table(story) == {(HOSTILE[i], "history"): ([1], None)}, guid
    assert len({keys.ledger(g) for g in guids}) == len(guids)


async def test_named_subscriber_tokens_keep_old_configs_working(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    server = await make_server(
        subscriber_tokens=("plain", "Named:secret"), admin_tokens=(ADMIN,), ledger_flush=0.05
    )
    await publish(http, server.base, "Read", ["world"], guid="cfg")
    for token in ("plain", "secret"):
        status, _ = await get_json(http, f"{server.base}/v1/stories/cfg", headers=bearer(token))
        assert status == 200
    # The whole "Named:secret" is not a token: the part after the first ':' is.
    status, _ = await get_json(
        http, f"{server.base}/v1/stories/cfg", headers=bearer("Named:secret")
    )
    assert status == 401
    story = await story_deliveries(http, server, "cfg")
    assert table(story) == {("Named", "history"): ([1], None)}


async def test_while_redis_is_down_records_stay_bounded_and_drops_are_counted(
    redis_url: str,
) -> None:
    down = Settings(redis_url=f"redis://127.0.0.1:{free_port()}", ledger_pending=3)
    client = connect(down.redis_url or "")
    tally = Tally()
    ledger = Ledger(client, down, tally)
    for i in range(5):  # the third add passes the cap: aggregated at once
        tally.add("P", "websocket", [entry(f"{i + 1}-0", f"g{i}", 1)])
    assert len(tally.pending) == 2 and len(ledger.unsent) == 3
    with pytest.raises(FLUSH_ERRORS):  # a real refused connection
        await ledger.flush()
    # Kept for the next flush, the oldest two dropped and counted.
    assert [k[0] for k in ledger.unsent] == ["g2", "g3", "g4"] and ledger.dropped == 2
    await client.aclose()
    # Redis back (here: another one that answers): the kept records go out.
    up = connect(redis_url)
    ledger.redis, ledger._script = up, up.register_script(scripts.LEDGER)
    await ledger.flush()
    assert ledger.unsent == {} and ledger.written == 3
    fields: Any = await up.hgetall(keys.ledger("g4"))
    records, _ = parse_records(fields)
    assert [(r.partner, r.channel, r.mark) for r in records] == [("P", "websocket", 1)]
    assert await up.ttl(keys.ledger("g4")) > 86_400
    await up.aclose()


# ---- wire ledger --------------------------------------------------------------


async def test_wire_ledger_prints_the_table(wire: Server, http: aiohttp.ClientSession) -> None:
    async with websockets.connect(
        wire.ws + "?tags=world", additional_headers=bearer("alpha-token")
    ) as alpha:
        await subscribed(alpha)
        await publish(http, wire.base, "Tabled", ["world"], guid="tabled")
        await next_item(alpha)
        await withdraw(http, wire.base, "tabled")
        await next_item(alpha)
    await eventually(
        lambda: story_deliveries(http, wire, "tabled"),
        lambda s: all(r for _, r in table(s).values()) and bool(s["deliveries"]),
        "the withdrawal's record",
    )
    env = {**os.environ, "WIRE_URL": wire.base, "WIRE_ADMIN_TOKEN": ADMIN}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wire", "ledger", "tabled",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env, cwd=ROOT,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err
    lines = out.decode().splitlines()
    assert lines[0].split() == ["PARTNER", "CHANNEL", "VERSIONS", "FIRST", "LAST", "WITHDRAWAL",
                                "REACHED"]
    cells = lines[1].split()
    assert cells[:3] == ["Alpha", "websocket", "1"] and cells[-1] == "yes"
    assert "withdrawn" in lines[-1] and "anonymous live deliveries: 0" in lines[-1]
    env["WIRE_ADMIN_TOKEN"] = "wrong"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wire", "ledger", "tabled",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env, cwd=ROOT,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 1 and b"401" in err and b"Alpha" not in err + out


# ---- the pure parts (wire.core.ledger) -----------------------------------------


def entry(eid: str, guid: str, version: int, withdrawal: bool = False) -> Entry:
    body = {"guid": guid, "version": version}
    return Entry(eid, ("world",), 3, guid, orjson.dumps(body), withdrawal, "en")


def test_aggregate_keeps_one_record_per_partner_channel_and_version() -> None:
    a1, a2, kill = entry("1-0", "a", 1), entry("2-0", "a", 2), entry("3-0", "a", 3, True)
    pending: list[Pending] = [
        ("P", "websocket", [a1, a2], 100),
        ("P", "websocket", [a1], 50),  # a second connection of the same partner, earlier
        ("P", "websocket", [a2, kill], 300),
        ("Q", "sse", [a1], 200),
    ]
    into: dict[RecordKey, Span] = {}
    aggregate(pending, into)
    assert into == {
        ("a", "P", "websocket", 1): (50, 100),
        ("a", "P", "websocket", 2): (100, 300),
        ("a", "P", "websocket", WITHDRAWAL): (300, 300),
        ("a", "Q", "sse", 1): (200, 200),
    }
    older: dict[RecordKey, Span] = {("a", "Q", "sse", 1): (10, 20)}
    assert merge(older, into)[("a", "Q", "sse", 1)] == (10, 200)


def test_trim_drops_the_oldest_records() -> None:
    records: dict[RecordKey, Span] = {("g", "p", "sse", i): (i, i) for i in range(5)}
    assert trim(records, 3) == 2
    assert [k[3] for k in records] == [2, 3, 4]
    assert trim(records, 3) == 0


def test_fields_are_injective_and_other_fields_are_ignored() -> None:
    fields = {(p, c, m) for p in [*HOSTILE, "", "a"] for c in ("websocket", "sse") for m in (1, 2)}
    encoded = {encode_field(*f) for f in fields}
    assert len(encoded) == len(fields)
    assert all(b"\n" not in e and b"\x00" not in e for e in encoded)
    assert all(decode_field(encode_field(*f)) == f for f in fields)
    for other in (ANONYMOUS_FIELD, b"[1,2,3]", b"[\"a\",\"b\"]", b"[\"a\",\"b\",true]", b"[x"):
        assert decode_field(other) is None
    records, anonymous = parse_records({
        encode_field("P", "sse", 1): b"1000 2000", ANONYMOUS_FIELD: b"7", b"junk": b"1 2",
        encode_field("Q", "sse", 1): b"not a span",
    })
    assert records == [Record("P", "sse", 1, 1000, 2000)] and anonymous == 7


def test_the_answer_groups_by_partner_and_channel() -> None:
    records = [
        Record("B", "websocket", 2, 3000, 4000),
        Record("B", "websocket", 1, 1000, 2000),
        Record("B", "websocket", WITHDRAWAL, 5000, 5000),
        Record("A", "webhook", 1, 1500, 1500),
        Record("C", "sse", WITHDRAWAL, 6000, 6000),
    ]
    answer = deliveries("g", True, records, 4)
    assert answer["delivered_to"] == ["A", "B"] == delivered_to(records)
    assert answer["deliveries"] == [
        {"partner": "A", "channel": "webhook", "versions": [1], "first": rfc3339(1500),
         "last": rfc3339(1500), "withdrawal_reached": False},
        {"partner": "B", "channel": "websocket", "versions": [1, 2], "first": rfc3339(1000),
         "last": rfc3339(5000), "withdrawal_reached": True},
        {"partner": "C", "channel": "sse", "versions": [], "first": rfc3339(6000),
         "last": rfc3339(6000), "withdrawal_reached": True},
    ]
    assert deliveries("g", False, records[:1], 0)["deliveries"][0]["withdrawal_reached"] is None
    assert rfc3339(1_764_770_000_123) == "2025-12-03T13:53:20.123Z"


def test_the_tally_calls_for_a_flush_when_full() -> None:
    tally = Tally(cap=2)
    calls: list[int] = []
    tally.on_full = lambda: calls.append(len(tally.pending))
    tally.add("P", "sse", [])
    assert calls == []
    tally.add("P", "sse", [])
    assert calls == [2]
    tally.count("g", 3)
    tally.count("g", 2)
    pending, anonymous = tally.take()
    assert len(pending) == 2 and anonymous == {"g": 5} and tally.pending == []


def test_named_tokens_name_their_grant() -> None:
    assert named_token("plain") == (None, "plain")
    assert named_token("Name:tok:en") == ("Name", "tok:en")
    assert named_token(":tok") == (None, "tok")
    ents = Entitlements((("lim", Grant(frozenset({"sport"}), "Lim")),))
    tokens = ("Named:n", "anon")
    assert reader_grant("n", tokens, ents).name == "Named"
    assert reader_grant("n", tokens, ents).tags is None
    assert reader_grant("anon", tokens, ents).name is None
    assert reader_grant("lim", tokens, ents).name == "Lim"
    # The name does not make two grants differ (webhooks compare grants).
    assert Grant(frozenset({"sport"}), "Lim") == Grant(frozenset({"sport"}))
