"""Issue 11 hardening of the store: injective keys, all-or-nothing scripts,
idempotent embargoes, a releaser that cannot die, batched releases and
supervised background tasks. Real HTTP against a real Redis throughout."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import orjson
import pytest
import redis as sync_redis
from hypothesis import given
from hypothesis import strategies as st

from publisher.embargo import release_due
from tests.conftest import Server, ServerFactory
from tests.support import EDITOR_TOKEN, get_json, item, post
from wire.core.entitlements import Entitlements
from wire.core.entry import Entry
from wire.core.items import parse_submission
from wire.delivery.deliverer import Deliverer
from wire.runtime.arrivals import Arrivals
from wire.runtime.settings import Settings
from wire.runtime.supervisor import SUPERVISOR, Supervisor
from wire.storage import keys
from wire.storage.store import Store, connect

AUTH = {"Authorization": f"Bearer {EDITOR_TOKEN}"}
Http = aiohttp.ClientSession


async def wait_until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll ``check`` until it is true, failing after 20 seconds."""
    deadline = time.monotonic() + 20
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def redis_of(server: Server) -> sync_redis.Redis:
    return sync_redis.Redis.from_url(server.settings.redis_url or "")


async def story(http: Http, server: Server, guid: str) -> tuple[int, Any]:
    return await get_json(http, f"{server.base}/v1/stories/{guid}")


async def withdraw(http: Http, server: Server, guid: str) -> tuple[int, Any]:
    url = f"{server.base}/v1/stories/{guid}/withdraw"
    async with http.post(url, json={"reason": "Legal"}, headers=AUTH) as resp:
        return resp.status, await resp.json()


async def embargoes(http: Http, server: Server) -> list[dict[str, Any]]:
    async with http.get(f"{server.base}/v1/embargoes", headers=AUTH) as resp:
        assert resp.status == 200
        pending: list[dict[str, Any]] = (await resp.json())["embargoes"]
        return pending


def _soon(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


# --- 1. keys: no user string can address another object's key ----------------------------


async def test_guid_named_like_a_side_key_does_not_break_that_story(
    server: Server, http: Http
) -> None:
    status, other = await post(http, server.base, item("Other", guid="kc2:ids"))
    assert status == 201
    key = {"Idempotency-Key": "kc2-once"}
    first = await post(http, server.base, item("Mine", guid="kc2"), headers=key)
    again = await post(http, server.base, item("Mine", guid="kc2"), headers=key)
    assert first[0] == 201 and again == (200, first[1])
    status, body = await story(http, server, "kc2")
    assert status == 200 and body["story"]["versions"] == [first[1]["item"]]
    status, body = await story(http, server, "kc2:ids")
    assert status == 200 and body["story"]["versions"] == [other["item"]]
    _, listing = await get_json(http, f"{server.base}/v1/items")
    assert [i["guid"] for i in listing["items"]] == ["kc2", "kc2:ids"]


VALID_GUIDS = [
    "x",
    "x:ids",
    "x:tags",
    ":",
    "::ids",
    "wire:items",
    "wire:embargo:schedule",
    "A.b_c~d:e@f+g=h-i",
    "g" * 200,
    "urn:wire:0123456789abcdef01234567",
]


@pytest.mark.parametrize("guid", VALID_GUIDS)
async def test_every_valid_guid_publishes_versions_and_withdraws(
    server: Server, http: Http, guid: str
) -> None:
    # A neighbour whose side keys the guid would have hit under the old scheme.
    neighbour = guid[:196] + ":ids"
    assert (await post(http, server.base, item("Neighbour", guid=neighbour)))[0] == 201
    _, v1 = await post(http, server.base, item("One", guid=guid))
    status, v2 = await post(http, server.base, item("Two", guid=guid))
    assert status == 201 and v2["item"]["version"] == 2 and v2["item"]["mark"] == "Updated"
    status, body = await story(http, server, guid)
    assert status == 200 and body["story"]["versions"] == [v1["item"], v2["item"]]
    status, kill = await withdraw(http, server, guid)
    assert status == 200 and kill["item"]["guid"] == guid and kill["item"]["version"] == 3
    status, body = await story(http, server, guid)
    assert status == 200 and body["story"]["current"] == kill["item"]
    status, refused = await post(http, server.base, item("Back", guid=guid))
    assert status == 409 and refused["error"]["code"] == "story_withdrawn"
    status, body = await story(http, server, neighbour)
    assert status == 200 and [v["title"] for v in body["story"]["versions"]] == ["Neighbour"]


@pytest.mark.parametrize("guid", ["a{b}", "a*", "a b", "nyhe\u0308ter", "\u65b0\u95fb", "g" * 201])
async def test_guids_outside_the_alphabet_are_refused_at_the_door(
    server: Server, http: Http, guid: str
) -> None:
    status, body = await post(http, server.base, item(guid=guid))
    assert status == 400 and body["error"]["field"] == "guid"
    _, listing = await get_json(http, f"{server.base}/v1/items")
    assert listing["items"] == []


KEY_FUNCTIONS = (keys.story, keys.story_tags, keys.story_ids, keys.embargo, keys.idempotency)


@given(st.text(max_size=300), st.text(max_size=300))
def test_key_construction_is_injective(a: str, b: str) -> None:
    """Whatever the strings (braces, *, spaces, Unicode, : suffixes), two keys are
    equal only for the same function of the same string, and never a fixed key."""
    made = {(f.__name__, s): f(s) for f in KEY_FUNCTIONS for s in (a, b)}
    by_key: dict[str, set[tuple[str, str]]] = {}
    for origin, key in made.items():
        by_key.setdefault(key, set()).add(origin)
    assert all(len(origins) == 1 for origins in by_key.values())
    assert not {keys.STREAM, keys.EMBARGOES} & set(made.values())


def test_suffix_guids_get_unrelated_keys() -> None:
    assert keys.story("kc2:ids") not in (keys.story_ids("kc2"), keys.story_tags("kc2"))
    assert keys.story("kc2") != keys.story("kc2:ids")


async def test_a_foreign_key_type_refuses_the_write_before_anything_is_written(
    server: Server, http: Http
) -> None:
    """A damaged side key (here: a string where the story's id list belongs) makes
    the script answer before its first write: nothing in the stream, no version,
    the Idempotency-Key not used up."""
    r = redis_of(server)
    r.set(keys.story_ids("damaged"), "not a list")
    key = {"Idempotency-Key": "damaged-1"}
    status, body = await post(http, server.base, item("D", guid="damaged"), headers=key)
    assert status == 500 and body["error"]["code"] == "internal_error"
    assert r.xlen(keys.STREAM) == 0
    assert not r.exists(keys.story("damaged"), keys.idempotency("damaged-1"))
    r.set(keys.embargo("held"), "not a hash")
    later = item("E", guid="held", embargo_until=_soon(60))
    status, _ = await post(http, server.base, later, headers={"Idempotency-Key": "held-1"})
    assert status == 500 and await embargoes(http, server) == []
    assert not r.exists(keys.EMBARGOES, keys.idempotency("held-1"))
    r.delete(keys.story_ids("damaged"))
    r.hset(keys.story("w"), "version", "1")
    r.set(keys.story_tags("w"), "not a set")
    status, _ = await withdraw(http, server, "w")
    assert status == 500 and r.xlen(keys.STREAM) == 0
    assert r.hget(keys.story("w"), "version") == b"1"


# --- 2. idempotent embargoed publishes ---------------------------------------------------


async def test_embargo_with_idempotency_key_is_scheduled_once(server: Server, http: Http) -> None:
    body = item("Held", ["markets"], guid="held", embargo_until=_soon(3600))
    key = {"Idempotency-Key": "held-1"}
    answers = [await post(http, server.base, body, headers=key) for _ in range(3)]
    assert [s for s, _ in answers] == [202, 200, 200]
    assert answers[1][1] == answers[2][1] == answers[0][1]
    assert answers[0][1]["item"]["pubstatus"] == "withheld"
    assert [p["guid"] for p in await embargoes(http, server)] == ["held"]
    other = {**body, "title": "Different"}
    status, err = await post(http, server.base, other, headers=key)
    assert status == 422 and err["error"]["code"] == "idempotency_key_reused"
    assert [p["title"] for p in await embargoes(http, server)] == ["Held"]
    # One key, one kind of publish: an immediate body with it is another body.
    status, err = await post(http, server.base, item("Now", guid="held"), headers=key)
    assert status == 422 and err["error"]["code"] == "idempotency_key_reused"
    _, listing = await get_json(http, f"{server.base}/v1/items")
    assert listing["items"] == []


async def test_racing_embargo_retries_schedule_one_item(server: Server, http: Http) -> None:
    body = item("Race", guid="race", embargo_until=_soon(3600))
    key = {"Idempotency-Key": "race-1"}
    answers = await asyncio.gather(*(post(http, server.base, body, headers=key) for _ in range(10)))
    assert sorted(s for s, _ in answers) == [200] * 9 + [202]
    assert len({orjson.dumps(b) for _, b in answers}) == 1
    assert len(await embargoes(http, server)) == 1


async def test_immediate_key_reused_for_an_embargo_is_422(server: Server, http: Http) -> None:
    key = {"Idempotency-Key": "mixed"}
    status, _ = await post(http, server.base, item("Now", guid="m"), headers=key)
    assert status == 201
    later = item("Now", guid="m", embargo_until=_soon(3600))
    status, err = await post(http, server.base, later, headers=key)
    assert status == 422 and err["error"]["code"] == "idempotency_key_reused"
    assert await embargoes(http, server) == []


# --- 8. embargoes under withdrawn guids; the releaser survives --------------------------


async def test_embargo_under_a_withdrawn_guid_is_409(server: Server, http: Http) -> None:
    await post(http, server.base, item("Story", guid="dead"))
    assert (await withdraw(http, server, "dead"))[0] == 200
    key = {"Idempotency-Key": "dead-embargo"}
    late = item("Update", guid="dead", embargo_until=_soon(3600))
    status, err = await post(http, server.base, late, headers=key)
    assert status == 409 and err["error"]["code"] == "story_withdrawn"
    assert await embargoes(http, server) == []
    assert not redis_of(server).exists(keys.idempotency("dead-embargo"))


async def test_releaser_survives_a_story_withdrawn_while_its_update_was_pending(
    make_server: ServerFactory, http: Http, caplog: pytest.LogCaptureFixture
) -> None:
    # This publisher's releaser looks once, at start, and then not for an hour,
    # so the withdrawal surely lands before the release.
    idle = await make_server(gateway=False, embargo_poll=3600)
    await post(http, idle.base, item("Story", guid="pulled"))
    status, _ = await post(http, idle.base, item("Update", guid="pulled", embargo_until=_soon(0.3)))
    assert status == 202
    status, _ = await post(http, idle.base, item("Later", guid="later", embargo_until=_soon(0.4)))
    assert status == 202
    assert (await withdraw(http, idle, "pulled"))[0] == 200
    await asyncio.sleep(0.5)  # both are due now: the clock moves, not a timing check
    caplog.set_level(logging.INFO, logger="wire.embargo")
    active = await make_server(gateway=False)

    async def all_released() -> bool:
        return await embargoes(http, active) == []

    await wait_until(all_released, "the releaser to empty the schedule")
    _, listing = await get_json(http, f"{active.base}/v1/items")
    assert [(i["guid"], i["version"]) for i in listing["items"]] == [
        ("later", 1),
        ("pulled", 2),
    ]
    assert listing["items"][1]["pubstatus"] == "canceled"
    assert any("pulled" in r.getMessage() and "withdrawn" in r.getMessage() for r in caplog.records)
    # The releaser still runs: a later embargo still goes out, and it is ready.
    await post(http, active.base, item("Next", guid="next", embargo_until=_soon(0.2)))
    await wait_until(all_released, "the releaser to release after the dropped item")
    status, body = await get_json(http, active.base + "/readyz")
    assert status == 200 and body["checks"]["task:embargo"] is True


# --- 9. batched release: many due at once, exactly once across racing releasers ---------


def _due_submission(guid: str, due: datetime, title: str = "Due") -> Any:
    """A submission whose embargo has already passed (validated as of an hour earlier)."""
    data = {"title": title, "tags": ["markets"], "guid": guid, "embargo_until": due.isoformat()}
    return parse_submission(data, now=due - timedelta(hours=1))


async def _schedule(store: Store, subs: list[Any]) -> None:
    for start in range(0, len(subs), 200):
        chunk = subs[start : start + 200]
        await asyncio.gather(*(store.embargo(s, orjson.dumps(s.pending())) for s in chunk))


async def test_5000_due_at_once_are_released_exactly_once_by_racing_releasers(
    redis_url: str,
) -> None:
    settings = Settings(redis_url=redis_url)
    clients = [connect(redis_url) for _ in range(3)]
    stores = [Store(c, settings) for c in clients]
    try:
        due = datetime.now(UTC) - timedelta(seconds=1)
        await _schedule(stores[0], [_due_submission(f"d{n}", due) for n in range(5000)])
        counts = await asyncio.gather(release_due(stores[1]), release_due(stores[2]))
        assert sum(counts) == 5000
        assert await stores[0].embargoes(500) == ([], None)
        entries = await stores[0].range_after((0, 0), None, count=10_000)
        guids = [e.guid for e in entries]
        assert len(guids) == 5000 and set(guids) == {f"d{n}" for n in range(5000)}
        assert {orjson.loads(e.json)["version"] for e in entries} == {1}
        assert await release_due(stores[1]) == 0
    finally:
        for c in clients:
            await c.aclose()


async def test_batched_release_keeps_due_order_and_publish_semantics(redis_url: str) -> None:
    settings = Settings(redis_url=redis_url)
    client = connect(redis_url)
    store = Store(client, settings)
    try:
        await store.publish(_due_submission("old", datetime.now(UTC)).released())
        base = datetime.now(UTC) - timedelta(seconds=10)
        step = timedelta(milliseconds=2)
        subs = [_due_submission(f"o{n:02}", base + n * step) for n in range(23)]
        subs.insert(11, _due_submission("old", base + timedelta(milliseconds=21)))
        await _schedule(store, list(reversed(subs)))
        assert await release_due(store, batch=5) == 24  # five scripts, in due order
        entries = await store.range_after((0, 0), None, count=100)
        assert [e.guid for e in entries] == ["old", *(s.guid for s in subs)]
        released_old = orjson.loads(entries[12].json)
        assert released_old["version"] == 2 and released_old["mark"] == "Updated"
        old = (await store.story_page("old", 100)).versions
        assert [orjson.loads(v.json)["version"] for v in old] == [1, 2]
        assert entries[12].tags == ("markets",)
    finally:
        await client.aclose()


# --- 8. supervision of background tasks --------------------------------------------------


async def test_supervisor_restarts_a_failing_task_and_reports_it_down(
    caplog: pytest.LogCaptureFixture,
) -> None:
    supervisor = Supervisor(backoff=0.01)
    runs: list[int] = []
    second_run = asyncio.Event()

    async def flaky() -> None:
        runs.append(len(runs))
        if len(runs) == 1:
            raise RuntimeError("boom")
        if len(runs) == 2:
            return  # a background task that just ends is restarted too
        second_run.set()
        await asyncio.Event().wait()

    caplog.set_level(logging.ERROR, logger="wire.runtime.supervisor")
    supervisor.start("flaky", flaky)
    await asyncio.wait_for(second_run.wait(), 10)
    assert runs == [0, 1, 2] and supervisor.failures["flaky"] == 2
    assert supervisor.status() == {"flaky": True}
    assert any(r.exc_info and "boom" in str(r.exc_info[1]) for r in caplog.records)
    await supervisor.stop()
    assert supervisor.tasks == {}


async def test_supervisor_marks_a_task_down_until_its_restart() -> None:
    supervisor = Supervisor()
    failed = asyncio.Event()

    async def broken() -> None:
        failed.set()
        raise ValueError("broken")

    supervisor.start("broken", broken, backoff=3600)
    await asyncio.wait_for(failed.wait(), 10)
    await asyncio.sleep(0)  # let the supervisor handle the exception
    assert supervisor.status() == {"broken": False}
    await supervisor.stop("broken")
    assert supervisor.status() == {}


async def test_readyz_reports_each_background_task(server: Server, http: Http) -> None:
    async def ready() -> bool:
        status, _ = await get_json(http, server.base + "/readyz")
        return status == 200

    await wait_until(ready, "the app to be ready")
    _, body = await get_json(http, server.base + "/readyz")
    tasks = {k: v for k, v in body["checks"].items() if k.startswith("task:")}
    assert tasks == {
        "task:embargo": True,
        "task:reader": True,
        "task:keepalive": True,
        "task:webhooks": True,
        "task:ledger": True,
    }

    supervisor = server.app[SUPERVISOR]
    failed = asyncio.Event()

    async def broken() -> None:
        failed.set()
        raise RuntimeError("probe")

    supervisor.start("probe", broken, backoff=3600)
    await asyncio.wait_for(failed.wait(), 10)

    async def down() -> bool:
        status, body = await get_json(http, server.base + "/readyz")
        return status == 503 and body["checks"]["task:probe"] is False

    await wait_until(down, "/readyz to report the failed task")
    await supervisor.stop("probe")
    await wait_until(ready, "/readyz to be ready once the task is gone")


class BrokenArrivals(Arrivals[Entry]):
    """A stream reader's batches whose waiting fails: a bug on the watcher's path."""

    def next_batch(self) -> asyncio.Future[Sequence[Entry]]:
        raise RuntimeError("watcher bug")


async def test_a_deliverer_whose_watcher_fails_ends_for_its_supervisor_to_restart(
    redis_url: str,
) -> None:
    """Its watcher wakes the deliveries; stopped, they would poll every few seconds
    while /readyz said all is well. The deliverer ends instead, with the failure,
    so that its supervisor restarts it and reports it down meanwhile."""
    redis = connect(redis_url)
    settings = Settings(redis_url=redis_url, webhook_lease=0.3)
    store = Store(redis, settings)
    deliverer = Deliverer(store, store, Entitlements(), settings, arrivals=BrokenArrivals(1))
    try:
        with pytest.raises(RuntimeError, match="watcher bug"):
            await asyncio.wait_for(deliverer.run(), 10)
    finally:
        await redis.aclose()
