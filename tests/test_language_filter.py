"""The live language filter (issue 13): subscribe ``languages``, ``?lang=``, resume, the hub index.

A language filter combines with the tag filter (both must match); no
languages means every language; a withdrawal passes every language filter.
Nothing sleeps: a fence item that the client matches, published after the
ones it must not get, proves they did not come (the stream is ordered).
"""

from __future__ import annotations

import os
from typing import Any

import aiohttp
import orjson
import pytest
import redis.asyncio as aioredis
from websockets.exceptions import InvalidStatus

from tests.conftest import Server, ServerFactory
from tests.support import EDITOR_TOKEN, own_tag, publish
from tests.test_gateway import SSE, fence, refused, sse, subscriber
from wire.core.entry import Entry, language_keys
from wire.core.errors import ValidationError
from wire.core.protocol import MAX_LANGUAGES, Subscribe, Subscription, parse_message
from wire.gateway.conn import Conn
from wire.gateway.holding import Holding
from wire.gateway.hub import Hub
from wire.storage import keys as store_keys


async def item(
    http: aiohttp.ClientSession, server: Server, tags: list[str], language: str, title: str
) -> str:
    return str((await publish(http, server.base, tags=tags, title=title, language=language))["id"])


async def sse_items_until(events: SSE, title: str) -> list[tuple[str, str]]:
    """(title, language) of SSE item events up to the one titled ``title``."""
    got = []
    while True:
        lines = await events.event()
        if lines[0].startswith(":"):
            continue
        data = orjson.loads(lines[2].removeprefix("data: "))
        got.append((data["title"], data.get("language", "")))
        if data["title"] == title:
            return got


# --- live, WebSocket ----------------------------------------------------------------


async def test_filtered_and_unfiltered_connections_each_get_exactly_theirs_in_order(
    server: Server, http: aiohttp.ClientSession
) -> None:
    world, sport = own_tag("lang"), own_tag("lang")
    async with (
        subscriber(server.ws) as ru,
        subscriber(server.ws) as everyone,
        subscriber(server.ws) as both,
    ):
        await ru.send(type="subscribe", tags=[world], languages=["RU"])
        sub = await ru.expect("subscribed", tags=[world], languages=["ru"])
        assert "position" in sub
        await everyone.send(type="subscribe", tags=[world])
        assert "languages" not in await everyone.expect("subscribed", tags=[world])
        await both.send(type="subscribe", tags=[world, sport], languages=["en", "pt-br"])
        await both.expect("subscribed", languages=["en", "pt-BR"])
        ids = {
            "en": await item(http, server, [world], "en", "en"),
            "ru": await item(http, server, [world], "ru", "ru"),
            "ru-sport": await item(http, server, [sport], "ru", "ru-sport"),
            "pt": await item(http, server, [f"{world}/brasil", sport], "pt-BR", "pt"),
            "fr": await item(http, server, [world], "fr", "fr"),
            "ru2": await item(http, server, [world], "ru", "ru2"),
        }
        end = await fence(http, server.base, [world, sport])  # en, the default language
        last = await item(http, server, [world], "ru", "last")
        assert await ru.items_until("last") == [ids["ru"], ids["ru2"], last]
        assert await everyone.items_until("fence") == [
            ids["en"], ids["ru"], ids["pt"], ids["fr"], ids["ru2"], end
        ]
        assert await both.items_until("fence") == [ids["en"], ids["pt"], end]


async def test_languages_are_a_property_of_the_subscription(
    server: Server, http: aiohttp.ClientSession
) -> None:
    world, more = own_tag("lang"), own_tag("lang")
    async with subscriber(server.ws) as s:
        await s.send(type="subscribe", tags=[world], languages=["ru"])
        await s.expect("subscribed", tags=[world], languages=["ru"])
        # A subscribe without languages keeps the filter, for the new tags too.
        await s.send(type="subscribe", tags=[more])
        await s.expect("subscribed", tags=sorted([world, more]), languages=["ru"])
        skipped = await item(http, server, [more], "en", "en")
        kept = await item(http, server, [more], "ru", "ru")
        assert await s.items_until("ru") == [kept]
        # An unsubscribe leaves it too; a subscribe with languages replaces it.
        await s.send(type="unsubscribe", tags=[more])
        await s.expect("subscribed", tags=[world], languages=["ru"])
        await s.send(type="subscribe", tags=[], languages=["en"])
        await s.expect("subscribed", tags=[world], languages=["en"])
        await item(http, server, [world], "ru", "ru-now-skipped")
        en = await item(http, server, [world], "en", "en-now")
        assert await s.items_until("en-now") == [en]
        # An empty list: every language again.
        await s.send(type="subscribe", tags=[], languages=[])
        msg = await s.expect("subscribed", tags=[world])
        assert "languages" not in msg
        ru = await item(http, server, [world], "ru", "ru-again")
        assert await s.items_until("ru-again") == [ru]
    assert skipped not in [m["item"]["id"] for m in s.seen if m["type"] == "item"]


async def test_query_lang_on_the_websocket_url(server: Server, http: aiohttp.ClientSession) -> None:
    world = own_tag("lang")
    async with subscriber(f"{server.ws}?tags={world}&lang=EN,ru") as s:
        await s.expect("subscribed", tags=[world], languages=["en", "ru"])
        await item(http, server, [world], "de", "de")
        ru = await item(http, server, [world], "ru", "ru")
        en = await item(http, server, [world], "en", "en")
        assert await s.items_until("en") == [ru, en]
    # lang alone sets the filter the later subscribes keep.
    async with subscriber(f"{server.ws}?lang=de") as s:
        await s.expect("subscribed", tags=[], languages=["de"])
        await s.send(type="subscribe", tags=[world])
        await s.expect("subscribed", tags=[world], languages=["de"])
        await item(http, server, [world], "en", "en")
        de = await item(http, server, [world], "de", "de")
        assert await s.items_until("de") == [de]


async def test_a_withdrawal_passes_every_language_filter(
    server: Server, http: aiohttp.ClientSession
) -> None:
    world = own_tag("lang")
    guid = "lang-kill-" + os.urandom(4).hex()
    async with subscriber(server.ws) as ru, subscriber(server.ws) as en:
        await ru.send(type="subscribe", tags=[world], languages=["ru"])
        await ru.expect("subscribed")
        await en.send(type="subscribe", tags=[world], languages=["en"])
        await en.expect("subscribed")
        version = await publish(http, server.base, tags=[world], language="ru", guid=guid)
        async with http.post(
            f"{server.base}/v1/stories/{guid}/withdraw",
            json={"reason": "Legal"},
            headers={"Authorization": f"Bearer {EDITOR_TOKEN}"},
        ) as resp:
            assert resp.status == 200
            kill = (await resp.json())["item"]
        end_ru = await item(http, server, [world], "ru", "fence")
        end_en = await item(http, server, [world], "en", "fence")
        assert await ids_until(ru, end_ru) == [version["id"], kill["id"], end_ru]
        assert await ids_until(en, end_en) == [kill["id"], end_en]


async def ids_until(sub: Any, last: str) -> list[str]:
    """Ids of the items a WebSocket subscriber gets, up to the one with id ``last``."""
    got: list[str] = []
    while not got or got[-1] != last:
        got.append((await sub.expect("item"))["item"]["id"])
    return got


async def test_bad_languages_are_refused(server: Server) -> None:
    async with subscriber(server.ws) as s:
        for bad in (["not a tag"], "en", [5], [f"l{i}x" for i in range(MAX_LANGUAGES + 1)]):
            await s.send(type="subscribe", tags=["world"], languages=bad)
            msg = await s.expect("error", field="languages")
            assert msg["code"] == "invalid_field", msg
        await s.alive()  # an error, not a close; and nothing subscribed
        await s.send(type="subscribe", tags=[], languages=["en"] * (MAX_LANGUAGES + 5))
        await s.expect("subscribed", tags=[], languages=["en"])  # duplicates count once
    with pytest.raises(InvalidStatus) as info:
        async with subscriber(f"{server.ws}?tags=world&lang=en,!!"):
            pass
    status, body = refused(info)
    assert status == 400 and body["error"]["field"] == "languages", body


async def test_bad_lang_on_sse_is_a_400(server: Server, http: aiohttp.ClientSession) -> None:
    async with http.get(server.base + "/v1/sse?tags=world&lang=e_n_g_l_i_s_h_x") as resp:
        assert resp.status == 400
        assert (await resp.json())["error"]["field"] == "languages"


# --- live and resumed, SSE ---------------------------------------------------------------


async def test_sse_lang_live_and_on_last_event_id_resume(
    server: Server, http: aiohttp.ClientSession
) -> None:
    world = own_tag("lang")
    url = f"{server.base}/v1/sse?tags={world}&lang=ru"
    async with sse(http, url) as events:
        _head, data = await events.event()
        assert orjson.loads(data.removeprefix("data: "))["languages"] == ["ru"]
        await item(http, server, [world], "en", "en1")
        last = await item(http, server, [world], "ru", "ru1")
        assert await sse_items_until(events, "ru1") == [("ru1", "ru")]
    # Published while away: a reconnect with Last-Event-ID keeps the URL's lang.
    await item(http, server, [world], "en", "en2")
    await item(http, server, [world], "ru", "ru2")
    await item(http, server, [world], "en", "en3")
    await item(http, server, [world], "ru", "ru3")
    async with sse(http, url, headers={"Last-Event-ID": last}) as events:
        await events.event()
        assert await sse_items_until(events, "ru3") == [("ru2", "ru"), ("ru3", "ru")]


# --- resume (since, backfill, compact), from memory and from Redis -----------------------


@pytest.mark.parametrize("recent_items", [10_000, 1])
async def test_resume_with_since_backfill_and_compact_is_filtered(
    make_server: ServerFactory, http: aiohttp.ClientSession, recent_items: int
) -> None:
    """With ``recent_items=1`` the window holds (almost) nothing: history comes from Redis."""
    server = await make_server(recent_items=recent_items)
    world = own_tag("lang")
    start = await item(http, server, [world], "en", "start")
    ids = {}
    for n in range(3):
        for language in ("en", "ru", "de"):
            title = f"{language}{n}"
            ids[title] = await item(http, server, [world], language, title)
    story = "lang-story-" + os.urandom(4).hex()
    first = await publish(http, server.base, tags=[world], language="ru", guid=story, title="s1")
    second = await publish(http, server.base, tags=[world], language="ru", guid=story, title="s2")
    want = [ids["ru0"], ids["de0"], ids["ru1"], ids["de1"], ids["ru2"], ids["de2"]]
    async with subscriber(server.ws) as s:
        await s.send(type="subscribe", tags=[world], since=start, languages=["ru", "de"])
        await s.expect("subscribed", languages=["de", "ru"])
        assert await s.items_until("s2") == [*want, first["id"], second["id"]]
    async with subscriber(server.ws) as s:
        await s.send(type="subscribe", tags=[world], backfill=3, languages=["de"])
        await s.expect("subscribed")
        assert await s.items_until("de2") == [ids["de0"], ids["de1"], ids["de2"]]
    async with subscriber(server.ws) as s:
        await s.send(type="subscribe", tags=[world], since=start, compact=True, languages=["ru"])
        await s.expect("subscribed")
        assert await s.items_until("s2") == [ids["ru0"], ids["ru1"], ids["ru2"], second["id"]]


# --- the stream entry -------------------------------------------------------------------


async def test_the_stream_entry_carries_the_normalized_language(
    server: Server, http: aiohttp.ClientSession, redis_url: str
) -> None:
    stored = await publish(http, server.base, tags=[own_tag("lang")], language="pt-br", title="x")
    client = aioredis.from_url(redis_url)
    try:
        rows: Any = await client.xrange(store_keys.STREAM, stored["id"], stored["id"])
    finally:
        await client.aclose()
    [(_, fields)] = rows
    assert fields[b"l"] == b"pt-BR"
    assert Entry.from_fields(stored["id"], fields).language == "pt-BR"


def test_entries_without_the_l_field() -> None:
    """Written before entries carried ``l``: the JSON's language, else every filter passes."""
    base = {b"t": b"world", b"u": b"5", b"g": b"g1"}
    old = Entry.from_fields("1-0", {**base, b"j": b'{"guid":"g1","language":"ru"}'})
    assert old.language == "ru"
    assert old.matches(language_keys(frozenset({"world"}), frozenset({"ru"})))
    assert not old.matches(language_keys(frozenset({"world"}), frozenset({"en"})))
    older = Entry.from_fields("2-0", {**base, b"j": b'{"guid":"g1"}', b"l": b""})
    assert older.language is None
    assert older.matches(language_keys(frozenset({"world"}), frozenset({"en"})))
    assert not older.matches(language_keys(frozenset({"sport"}), frozenset({"en"})))


# --- the protocol, without I/O ----------------------------------------------------------


def test_parse_languages() -> None:
    cmd = parse_message(b'{"type":"subscribe","tags":["a"],"languages":["RU","en","ru"]}')
    assert cmd == Subscribe(tags=("a",), languages=("en", "ru"))
    assert parse_message(b'{"type":"subscribe","tags":["a"]}') == Subscribe(tags=("a",))
    with pytest.raises(ValidationError) as info:
        parse_message(b'{"type":"subscribe","tags":["a"],"languages":"en"}')
    assert info.value.field == "languages"


def test_subscription_keys() -> None:
    sub = Subscription()
    sub.subscribe(("a", "b/c"))
    assert sub.keys == {"a", "b/c"}
    sub.subscribe((), ("en", "ru"))
    assert sub.keys == {"a@en", "a@ru", "b/c@en", "b/c@ru"}
    sub.unsubscribe(("a",))
    assert sub.keys == {"b/c@en", "b/c@ru"}
    sub.subscribe((), ())
    assert sub.keys == {"b/c"}


# --- the hub's index, in plain calls ----------------------------------------------------


class Transport:
    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> None:
        self.data += data

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return False

    def close(self) -> None: ...

    def abort(self) -> None: ...


class Counted(Conn):
    """A connection that counts how often dispatch looks at it (once per targeted item)."""

    def __init__(self) -> None:
        super().__init__(Transport())
        self.visits = 0
        self._holding: Holding | None = None

    @property
    def holding(self) -> Holding | None:
        self.visits += 1
        return self._holding

    @holding.setter
    def holding(self, value: Holding | None) -> None:
        self._holding = value

    def titles(self) -> list[str]:
        transport = self.transport
        assert isinstance(transport, Transport)
        return [m["item"]["title"] for m in _frames(bytes(transport.data))]


def _frames(data: bytes) -> list[dict[str, Any]]:
    out = []
    while data:
        n = data[1] & 0x7F
        start = 2
        if n == 126:
            n, start = int.from_bytes(data[2:4]), 4
        elif n == 127:
            n, start = int.from_bytes(data[2:10]), 10
        out.append(orjson.loads(data[start : start + n]))
        data = data[start + n :]
    return out


def entry(n: int, tags: tuple[str, ...], language: str | None, withdrawal: bool = False) -> Entry:
    body = orjson.dumps({"id": f"{n}-0", "title": f"t{n}", "language": language})
    return Entry(f"{n}-0", tags, 5, f"g{n}", body, withdrawal, language)


def test_dispatch_looks_only_at_matching_connections() -> None:
    hub = Hub()
    plain, ru, en_ru, other = Counted(), Counted(), Counted(), Counted()
    subscriptions = [
        (plain, frozenset()),
        (ru, frozenset({"ru"})),
        (en_ru, frozenset({"en", "ru"})),
        (other, frozenset({"de"})),
    ]
    for conn, languages in subscriptions:
        hub.attach(conn)
        hub.retag(conn, language_keys(frozenset({"world"}), languages))
    assert "world@ru" in hub.index and hub.languages == {"world": {"ru", "en", "de"}}
    hub.dispatch([
        entry(1, ("world/europe",), "en"),
        entry(2, ("world",), "ru"),
        entry(3, ("sport",), "ru"),
        entry(4, ("world",), "fr"),
    ])
    assert plain.titles() == ["t1", "t2", "t4"]
    assert ru.titles() == ["t2"]
    assert en_ru.titles() == ["t1", "t2"]
    assert other.titles() == []
    # Each connection was looked at once per item it got, never for another item.
    assert [c.visits for c in (plain, ru, en_ru, other)] == [3, 1, 2, 0]
    # A withdrawal has no language: every bucket of its routes.
    hub.dispatch([entry(5, ("world",), None, withdrawal=True)])
    assert [c.titles()[-1:] for c in (plain, ru, en_ru, other)] == [["t5"]] * 4


def test_leaving_the_index_forgets_empty_language_buckets() -> None:
    hub = Hub()
    a, b = Counted(), Counted()
    for conn in (a, b):
        hub.attach(conn)
    hub.retag(a, language_keys(frozenset({"world", "sport"}), frozenset({"ru"})))
    hub.retag(b, language_keys(frozenset({"world"}), frozenset({"ru", "en"})))
    hub.retag(a, language_keys(frozenset({"world"}), frozenset({"ru"})))
    assert hub.languages == {"world": {"ru", "en"}}
    hub.detach(b)
    assert hub.languages == {"world": {"ru"}}
    hub.retag(a, frozenset({"world"}))  # the filter dropped: back in the plain bucket
    assert hub.languages == {} and set(hub.index) == {"world"}
    hub.dispatch([entry(1, ("world",), "en")])
    assert a.titles() == ["t1"]
