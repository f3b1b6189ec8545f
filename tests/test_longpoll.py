"""The long-poll cursor (issue 14): ``GET /v1/items?after=<id>&wait=<s>``.

Nothing here depends on timing: a waiting request is seen waiting through the
process's own waiter count, a non-matching item is seen dispatched by the
stream reader before the test checks the request still waits, and a request
that ends early because of an item carries that item (a timed-out wait would
answer empty).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from publisher.longpoll import WATCHER
from tests.conftest import Server, ServerFactory
from tests.support import batch_ids, get_json, own_tag, publish, sport_partner, wait_for
from tests.test_ninjs import run_export
from wire.core.ids import parse_id
from wire.web.appkeys import ARRIVALS


async def poll(
    http: aiohttp.ClientSession, server: Server, after: str, wait: str = "30", **query: str
) -> dict[str, Any]:
    params = {"after": after, "wait": wait, **query}
    status, body = await get_json(http, f"{server.base}/v1/items", params=params)
    assert status == 200, body
    assert "next" in body, body
    return dict(body)


async def test_a_loop_on_next_gets_every_item_of_four_publishers_once_in_order(
    server: Server, http: aiohttp.ClientSession
) -> None:
    t = own_tag("poll")

    async def publisher(k: int) -> None:
        for i in range(125):
            await publish(http, server.base, f"{k}-{i}", [t])

    got: list[dict[str, Any]] = []
    cursor = "0-0"

    async def consumer() -> None:
        nonlocal cursor
        while len(got) < 500:
            body = await poll(http, server, cursor, "10", tags=t, limit="40")
            got.extend(body["items"])
            cursor = body["next"]

    await asyncio.gather(consumer(), *(publisher(k) for k in range(4)))
    ids = [i["id"] for i in got]
    assert len(ids) == 500 == len(set(ids))
    keys = [tuple(map(int, i.split("-"))) for i in ids]
    assert keys == sorted(keys)
    for k in range(4):  # each publisher's items in the order it published them
        mine = [i["title"] for i in got if i["title"].startswith(f"{k}-")]
        assert mine == [f"{k}-{i}" for i in range(125)]
    # The loop ends where the stream does: nothing more, and next stays put.
    body = await poll(http, server, cursor, "0", tags=t)
    assert body == {"items": [], "next": cursor}


async def test_a_wait_ends_with_a_matching_item_and_not_with_another(
    server: Server, http: aiohttp.ClientSession
) -> None:
    t = own_tag("poll")
    start = (await publish(http, server.base, "before", [t]))["id"]
    arrivals = server.app[ARRIVALS]
    waiting = asyncio.create_task(poll(http, server, start, tags=t))
    await wait_for(lambda: arrivals.waiting == 1, "the request to wait")
    seen = arrivals.published
    await publish(http, server.base, "other", [own_tag("poll")])
    await wait_for(lambda: arrivals.published > seen, "the reader to dispatch the other item")
    for _ in range(20):  # let the woken waiter run: it must go back to waiting
        await asyncio.sleep(0)
    assert not waiting.done() and arrivals.waiting == 1
    match = await publish(http, server.base, "match", [t])
    body = await waiting
    assert [i["id"] for i in body["items"]] == [match["id"]]
    assert body["next"] == match["id"]
    assert arrivals.waiting == 0


async def test_an_empty_answer_carries_the_cursor_it_waited_from(
    server: Server, http: aiohttp.ClientSession
) -> None:
    t = own_tag("poll")
    start = (await publish(http, server.base, "only", [t]))["id"]
    await publish(http, server.base, "other", [own_tag("poll")])
    assert await poll(http, server, start, "0", tags=t) == {"items": [], "next": start}
    # Without wait, the end of the stream still has no next (paging as before).
    status, body = await get_json(
        http, f"{server.base}/v1/items", params={"after": start, "tags": t}
    )
    assert status == 200 and body == {"items": []}


@pytest.mark.parametrize("wait", ["31", "-1", "1e3", "abc", "30.0001", ""])
async def test_a_bad_wait_is_refused(
    server: Server, http: aiohttp.ClientSession, wait: str
) -> None:
    url = f"{server.base}/v1/items"
    status, body = await get_json(http, url, params={"after": "0-0", "wait": wait})
    assert status == 400 and body["error"]["field"] == "wait"


async def test_wait_needs_after(server: Server, http: aiohttp.ClientSession) -> None:
    status, body = await get_json(http, f"{server.base}/v1/items", params={"wait": "5"})
    assert status == 400 and body["error"]["field"] == "wait"


async def test_past_max_waiters_a_read_answers_at_once_and_a_gone_client_frees_its_slot(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    server = await make_server(max_waiters=1)
    t = own_tag("poll")
    arrivals = server.app[ARRIVALS]
    async with aiohttp.ClientSession() as other:
        first = asyncio.create_task(poll(other, server, "0-0", tags=t))
        await wait_for(lambda: arrivals.waiting == 1, "the first request to wait")
        # A 30 s wait would outlast the test's timeout: this one answers at once.
        assert await poll(http, server, "0-0", tags=t) == {"items": [], "next": "0-0"}
        first.cancel()
    await wait_for(lambda: arrivals.waiting == 0, "the gone client's slot to be freed")


async def test_a_publisher_only_process_waits_on_its_own_watcher(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    server = await make_server(gateway=False)
    t = own_tag("poll")
    start = (await publish(http, server.base, "before", [t]))["id"]
    arrivals, watcher = server.app[ARRIVALS], server.app[WATCHER]
    assert not watcher.started  # nobody waited yet: no reads of its own
    waiting = asyncio.create_task(poll(http, server, start, tags=t))
    await wait_for(lambda: arrivals.waiting == 1, "the request to wait")
    await wait_for(lambda: watcher.position is not None, "the watcher to find the end")
    seen = arrivals.published
    await publish(http, server.base, "other", [own_tag("poll")])
    await wait_for(lambda: arrivals.published > seen, "the watcher to read the other item")
    for _ in range(20):
        await asyncio.sleep(0)
    assert not waiting.done()
    match = await publish(http, server.base, "match", [t])
    body = await waiting
    assert [i["id"] for i in body["items"]] == [match["id"]]
    status, ready = await get_json(http, f"{server.base}/readyz")
    assert status == 200 and ready["checks"]["task:arrivals"] is True


async def test_the_grant_applies_to_a_waiting_read(
    make_server: ServerFactory, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    path = sport_partner(tmp_path)
    server = await make_server(entitlements=path, subscriber_tokens=("staff",))
    arrivals = server.app[ARRIVALS]
    start = (await publish(http, server.base, "start", ["politics"]))["id"]
    status, body = await get_json(
        http,
        f"{server.base}/v1/items",
        params={"after": start, "wait": "1", "tags": "politics", "token": "partner"},
    )
    assert status == 403
    waiting = asyncio.create_task(poll(http, server, start, token="partner"))
    await wait_for(lambda: arrivals.waiting == 1, "the partner's request to wait")
    seen = arrivals.published
    await publish(http, server.base, "Summit", ["politics"])
    await wait_for(lambda: arrivals.published > seen, "the reader to dispatch the summit")
    for _ in range(20):
        await asyncio.sleep(0)
    assert not waiting.done()
    match = await publish(http, server.base, "Match report", ["sport/football"])
    body = await waiting
    assert [i["title"] for i in body["items"]] == ["Match report"]
    assert body["next"] == match["id"]


async def test_a_cursor_retention_passed_is_told_history_truncated_and_moves_past_it(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    """A partner polling from a cursor that retention has passed used to get the
    items still kept without a word about the ones gone; now the answer names
    the range (``history_truncated``), every item after it comes, and ``next``
    moves past it even when nothing matched, so the notice is not repeated;
    ``wire export --after`` says so on stderr."""
    server = await make_server(max_items=300)
    news, quiet = own_tag("poll"), own_tag("poll")
    early = await batch_ids(http, server.base, "Early", 50, news)
    gone = await batch_ids(http, server.base, "Quiet", 5, quiet)
    for part in range(3):  # the stream past its limit: the oldest are trimmed
        await batch_ids(http, server.base, f"Other {part}", 200, own_tag("poll"))
    late = await batch_ids(http, server.base, "Late", 5, news)
    url = f"{server.base}/v1/items"
    for wait in ({}, {"wait": "5"}):
        status, body = await get_json(http, url, params={"after": early[0], "tags": news, **wait})
        assert status == 200, body
        [gap] = body["history_truncated"]
        assert gap["after"] == early[0]
        assert all(parse_id(e) <= parse_id(gap["upto"]) for e in early[1:]), "the range covers them"
        assert [i["id"] for i in body["items"]] == late, "every item still kept"
    status, body = await get_json(http, url, params={"after": gone[0], "tags": quiet, "wait": "5"})
    assert status == 200 and body["items"] == [], body
    [gap] = body["history_truncated"]
    assert body["next"] == gap["upto"], "the cursor moves past what is gone"
    status, body = await get_json(http, url, params={"after": body["next"], "tags": quiet})
    assert status == 200 and "history_truncated" not in body, body
    status, body = await get_json(http, url, params={"after": late[-1], "tags": news})
    assert status == 200 and body == {"items": []}, "a cursor retention has not passed: as before"
    # wire export says so on stderr, and exports what is kept; from the start
    # ("everything still kept") it has nothing to say.
    code, docs, err = await run_export(server.base, "--tags", news, "--after", early[0])
    assert code == 0 and [d["id"] for d in docs] == late, err
    assert f"items after {early[0]} up to" in err and "no longer kept" in err
    code, docs, err = await run_export(server.base, "--tags", news)
    assert code == 0 and [d["id"] for d in docs] == late and err == "", err
