"""Webhooks: signed with the Standard Webhooks scheme, in order, retried, leased.

Every receiver is a real aiohttp server inside the test on a loopback port
(so the tests set ``WIRE_WEBHOOK_ALLOW_PRIVATE``); every signature is checked
with the independent implementation below, written from the specification,
and with the ``standardwebhooks`` package when it is installed.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import importlib
import itertools
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from tests.conftest import Server, ServerFactory
from tests.support import (
    ADMIN,
    EDITOR_TOKEN,
    WEBHOOKS_FAST,
    Receiver,
    WireProcess,
    add_webhook,
    admin,
    batch_ids,
    create_webhook,
    free_port,
    get_json,
    publish,
    wait_for,
    webhook_control,
    webhook_state,
)
from wire.core.ids import parse_id
from wire.delivery.deliverer import Deliverer
from wire.delivery.urls import public
from wire.runtime.rightofway import RightOfWay
from wire.web.webhooks import DELIVERER, make_deliverer

FAST = WEBHOOKS_FAST


def verify(secret: str, headers: Any, body: bytes) -> None:
    """The Standard Webhooks check, written here from the specification."""
    key = base64.b64decode(secret.split("_", 1)[1])
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    versions = [s.split(",", 1) for s in headers["webhook-signature"].split(" ")]
    assert ["v1", expected] in versions
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 300


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    await r.stop()


async def test_items_arrive_signed_in_order_with_the_websocket_message(
    make_server: ServerFactory, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    server = await make_server(**FAST)
    made = await add_webhook(http, server, receiver.url, tags=["world"], description="CMS")
    secret = made["secret"]
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 32
    assert made["status"] == "active" and made["tags"] == ["world"]
    published = [
        (await publish(http, server.base, f"n{i}", ["world/europe"]))["id"] for i in range(15)
    ]
    await publish(http, server.base, "elsewhere", ["sport"])
    await wait_for(lambda: len(receiver.ok()) >= 15, "15 deliveries")
    assert receiver.ok_ids() == published
    for headers, body in receiver.ok():
        assert headers["content-type"] == "application/json"
        verify(secret, headers, body)
        message = orjson.loads(body)
        assert message["type"] == "item" and message["item"]["id"] == headers["webhook-id"]
    try:  # the reference library too, when installed (the dev extra has it)
        library: Any = importlib.import_module("standardwebhooks.webhooks")
    except ImportError:
        pass
    else:
        for headers, body in receiver.ok():
            library.Webhook(secret).verify(body, headers)
    shown = await webhook_state(http, server, made["id"])
    assert "secret" not in shown
    assert shown["delivered"] == 15 and shown["lag"] == 0
    async with http.get(server.base + "/metrics") as resp:
        text = await resp.text()
    assert f'wire_webhook_deliveries_total{{webhook="{made["id"]}"}} 15.0' in text
    assert receiver.url not in text


async def test_a_withdrawal_is_delivered_and_the_listing_has_no_secret(
    make_server: ServerFactory, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    server = await make_server(**FAST)
    made = await add_webhook(http, server, receiver.url, tags=["*"])
    await publish(http, server.base, "v1", ["world"], guid="story-1")
    await wait_for(lambda: len(receiver.ok()) >= 1, "the item")
    async with http.post(
        server.base + "/v1/stories/story-1/withdraw",
        json={"reason": "legal"},
        headers={"Authorization": f"Bearer {EDITOR_TOKEN}"},
    ) as resp:
        assert resp.status == 200
        withdrawal = (await resp.json())["item"]
    await wait_for(lambda: len(receiver.ok()) >= 2, "item and withdrawal")
    headers, body = receiver.ok()[1]
    assert headers["webhook-id"] == withdrawal["id"]
    assert orjson.loads(body) == {"type": "item", "item": withdrawal}
    status, listing = await get_json(http, server.base + "/v1/webhooks", headers=admin())
    assert status == 200 and [w["id"] for w in listing["webhooks"]] == [made["id"]]
    assert "secret" not in listing["webhooks"][0]


async def test_a_receiver_failing_for_a_while_loses_nothing_and_doubles_nothing(
    make_server: ServerFactory, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    receiver.answer = lambda n: 500 if n < 6 or n % 3 == 0 else 200
    server = await make_server(**FAST)
    made = await add_webhook(http, server, receiver.url, tags=["world"])
    published = [(await publish(http, server.base, f"n{i}"))["id"] for i in range(10)]
    await wait_for(lambda: len(receiver.ok()) >= 10, "10 deliveries")
    assert receiver.ok_ids() == published
    # Every attempt of one item carries the same webhook-id, and retries come in order.
    attempts = [h["webhook-id"] for h, _ in receiver.requests]
    assert sorted(set(attempts), key=attempts.index) == published
    shown = await webhook_state(http, server, made["id"])
    assert shown["delivered"] == 10 and shown["last_status"] == 200
    assert shown["failing_since"] is None and shown["lag"] == 0
    assert shown["cursor"] == published[-1]


async def test_a_receiver_down_longer_than_the_first_backoff(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    receiver = Receiver()  # not listening yet: connections are refused
    server = await make_server(**FAST)
    made = await add_webhook(http, server, receiver.url, tags=["world"])
    published = [(await publish(http, server.base, f"n{i}"))["id"] for i in range(5)]
    failures = server.app[DELIVERER].failures
    # Several attempts refused: down for longer than the first backoff (and the second).
    await wait_for(lambda: failures.get(made["id"], 0) >= 4, "repeated refusals")
    failing = await webhook_state(http, server, made["id"])
    assert failing["last_status"] == 0 and failing["failing_since"] is not None
    assert failing["last_error"] and failing["lag"] == 5 and failing["delivered"] == 0
    await receiver.start()
    try:
        await wait_for(lambda: len(receiver.ok()) >= 5, "5 deliveries after the receiver came up")
        assert receiver.ok_ids() == published
    finally:
        await receiver.stop()


async def test_pause_holds_delivery_and_resume_delivers_what_was_held(
    make_server: ServerFactory, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    server = await make_server(**FAST)
    made = await add_webhook(http, server, receiver.url, tags=["world"])
    first = (await publish(http, server.base, "before"))["id"]
    await wait_for(lambda: receiver.ok_ids() == [first], "the first item")
    assert (await webhook_control(http, server, made["id"], "pause"))["status"] == "paused"
    deliverer = server.app[DELIVERER]
    await wait_for(lambda: made["id"] not in deliverer.tasks, "the deliverer to let go")
    held = [(await publish(http, server.base, f"held {i}"))["id"] for i in range(3)]
    await asyncio.sleep(0.5)  # a few lease rounds: nothing may go out while paused
    assert receiver.ok_ids() == [first]
    assert (await webhook_state(http, server, made["id"]))["lag"] == 3
    assert (await webhook_control(http, server, made["id"], "resume"))["status"] == "active"
    await wait_for(lambda: len(receiver.ok()) >= 4, "the held items")
    assert receiver.ok_ids() == [first, *held]


async def test_a_webhook_whose_cursor_retention_passed_is_marked_and_goes_on(
    make_server: ServerFactory, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    """Paused while the stream ran past its limit: on resume the items retention
    removed are not waited for or skipped in silence; the webhook says
    ``history_truncated`` and every item still kept follows, in order."""
    server = await make_server(max_items=300, **FAST)
    made = await add_webhook(http, server, receiver.url, tags=["world"])
    first = await publish(http, server.base, tags=["world"], title="first")
    await wait_for(lambda: len(receiver.ok()) == 1, "the first delivery")
    await webhook_control(http, server, made["id"], "pause")
    await batch_ids(http, server.base, "Gone", 50, "world")
    for part in range(3):  # the stream past its limit: the oldest are trimmed
        await batch_ids(http, server.base, f"Other {part}", 200, "other")
    late = await batch_ids(http, server.base, "Late", 3, "world")
    assert not (await webhook_state(http, server, made["id"]))["history_truncated"]
    await webhook_control(http, server, made["id"], "resume")
    await wait_for(lambda: len(receiver.ok()) == 4, "the items still kept")
    delivered = [orjson.loads(body)["item"]["id"] for _, body in receiver.ok()]
    assert delivered == [first["id"], *late]
    assert (await webhook_state(http, server, made["id"]))["history_truncated"] is True


async def test_nothing_is_posted_once_pause_has_answered(
    make_server: ServerFactory, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    server = await make_server(**FAST)
    made = await add_webhook(http, server, receiver.url, tags=["world"])
    first = (await publish(http, server.base, "before"))["id"]
    await wait_for(lambda: receiver.ok_ids() == [first], "the first item")
    await webhook_control(http, server, made["id"], "pause")
    # Published at once, while the deliverer still runs the webhook's task
    # (it notices the pause only at its next lease round): it checks the
    # lease before each POST, so none of these may go out.
    held = [(await publish(http, server.base, f"held {i}"))["id"] for i in range(3)]
    deliverer = server.app[DELIVERER]
    await wait_for(lambda: made["id"] not in deliverer.tasks, "the deliverer to let go")
    assert [h["webhook-id"] for h, _ in receiver.requests] == [first]
    await webhook_control(http, server, made["id"], "resume")
    await wait_for(lambda: len(receiver.ok()) >= 4, "the held items")
    assert receiver.ok_ids() == [first, *held]


async def test_a_pause_mid_stream_lets_at_most_the_item_in_flight_arrive(
    make_server: ServerFactory, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    receiver.delay = 0.02  # each answer takes a while: a POST is nearly always in flight
    server = await make_server(**FAST)
    made = await add_webhook(http, server, receiver.url, tags=["world"])
    published = [(await publish(http, server.base, f"n{i}"))["id"] for i in range(30)]
    await wait_for(lambda: len(receiver.requests) >= 3, "the first deliveries")
    await webhook_control(http, server, made["id"], "pause")
    arrived = len(receiver.requests)
    deliverer = server.app[DELIVERER]
    await wait_for(lambda: made["id"] not in deliverer.tasks, "the deliverer to let go")
    assert len(receiver.requests) <= arrived + 1
    assert len(receiver.requests) < len(published)
    await webhook_control(http, server, made["id"], "resume")
    await wait_for(lambda: set(receiver.ok_ids()) >= set(published), "every item after resume")
    ids = receiver.ok_ids()
    assert sorted(set(ids), key=ids.index) == published
    # The item in flight at the pause may come again (its cursor write found
    # the lease gone), with the same webhook-id; nothing else does.
    assert len(ids) - len(set(ids)) <= 1


async def test_lag_is_exact_up_to_1000_and_says_so_beyond(
    make_server: ServerFactory, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    server = await make_server(**FAST, deliver_webhooks=False)
    made = await add_webhook(http, server, receiver.url, tags=["world"])
    sem = asyncio.Semaphore(8)

    async def one(i: int) -> str:
        async with sem:
            return str((await publish(http, server.base, f"n{i}", ["world"]))["id"])

    published = sorted(await asyncio.gather(*(one(i) for i in range(1001))), key=parse_id)
    shown = await webhook_state(http, server, made["id"])
    assert (shown["lag"], shown["lag_exact"]) == (1000, False)
    recent = await add_webhook(http, server, receiver.url, tags=["world"], since=published[1])
    shown = await webhook_state(http, server, recent["id"])
    assert (shown["lag"], shown["lag_exact"]) == (999, True)
    caught_up = await add_webhook(http, server, receiver.url, tags=["world"])
    shown = await webhook_state(http, server, caught_up["id"])
    assert (shown["lag"], shown["lag_exact"]) == (0, True)


async def test_rotate_secret_signs_later_deliveries_with_the_new_secret(
    make_server: ServerFactory, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    server = await make_server(**FAST)
    made = await add_webhook(http, server, receiver.url, tags=["world"])
    rotated = (await webhook_control(http, server, made["id"], "rotate-secret"))["secret"]
    assert rotated != made["secret"] and rotated.startswith("whsec_")
    await publish(http, server.base, "after rotation")
    await wait_for(lambda: len(receiver.ok()) >= 1, "a delivery")
    headers, body = receiver.ok()[0]
    verify(rotated, headers, body)


async def test_a_webhook_failing_past_the_window_is_disabled_and_resume_restarts_it(
    make_server: ServerFactory, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    broken = True
    receiver.answer = lambda n: 500 if broken else 200
    server = await make_server(**FAST, webhook_disable_after=0.3)
    made = await add_webhook(http, server, receiver.url, tags=["world"])
    published = [(await publish(http, server.base, f"n{i}"))["id"] for i in range(3)]
    shown: dict[str, Any] = {}
    for _ in range(500):
        shown = await webhook_state(http, server, made["id"])
        if shown["status"] == "disabled":
            break
        await asyncio.sleep(0.02)
    assert shown["status"] == "disabled" and shown["last_status"] == 500
    assert shown["delivered"] == 0 and receiver.ok_ids() == []
    broken = False
    await webhook_control(http, server, made["id"], "resume")
    await wait_for(lambda: len(receiver.ok()) >= 3, "delivery after resume")
    assert receiver.ok_ids() == published


async def test_a_partner_webhook_gets_only_the_partners_grant(
    make_server: ServerFactory, http: aiohttp.ClientSession, receiver: Receiver, tmp_path: Path
) -> None:
    grants = tmp_path / "partners.toml"
    grants.write_text('[[token]]\ntoken = "p-sport"\nname = "Partner A"\ntags = ["sport"]\n')
    server = await make_server(**FAST, entitlements=grants)
    status, answer = await create_webhook(
        http, server, url=receiver.url, tags=["*"], partner="Nobody"
    )
    assert status == 400 and answer["error"]["field"] == "partner"
    made = await add_webhook(http, server, receiver.url, tags=["*"], partner="Partner A")
    assert made["partner"] == "Partner A"
    await publish(http, server.base, "world only", ["world"])
    both = await publish(http, server.base, "both", ["world", "sport"], guid="g-both")
    sport = await publish(http, server.base, "sport", ["sport/football"])
    await wait_for(lambda: len(receiver.ok()) >= 2, "the granted items")
    async with http.post(
        server.base + "/v1/stories/g-both/withdraw",
        json={"reason": "legal"},
        headers={"Authorization": f"Bearer {EDITOR_TOKEN}"},
    ) as resp:
        kill = (await resp.json())["item"]
    await wait_for(lambda: len(receiver.ok()) >= 3, "the granted items")
    assert receiver.ok_ids() == [both["id"], sport["id"], kill["id"]]
    withdrawal = orjson.loads(receiver.ok()[2][1])["item"]
    assert withdrawal["tags"] == ["sport"]  # narrowed to the grant, as everywhere


async def test_private_targets_are_refused_without_the_setting(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    server = await make_server(admin_tokens=(ADMIN,))
    for url in (
        "http://example.com/hook",
        "https://127.0.0.1/hook",
        "https://localhost/hook",
        "https://[::1]/hook",
        "https://169.254.169.254/latest",
        "ftp://example.com/",
        "https://user:pw@example.com/",
    ):
        status, answer = await create_webhook(http, server, url=url, tags=["world"])
        assert status == 400, (url, answer)
        assert answer["error"]["field"] == "url"
    assert not public("10.1.2.3") and not public("::ffff:127.0.0.1") and not public("fe80::1")
    assert public("8.8.8.8") and public("2001:4860:4860::8888")


async def test_the_registry_holds_at_most_max_webhooks_even_under_concurrent_creates(
    make_server: ServerFactory, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    """Twenty admins create at once against a cap of 5: five get 201, the rest a
    409 naming the cap; the listing shows exactly the five; deleting one frees
    a place."""
    server = await make_server(**FAST, max_webhooks=5)
    answers = await asyncio.gather(
        *(create_webhook(http, server, url=receiver.url, tags=[f"t{n}"]) for n in range(20))
    )
    made = sorted(body["webhook"]["id"] for status, body in answers if status == 201)
    refused = [body["error"] for status, body in answers if status != 201]
    assert len(made) == 5 and len(refused) == 15
    assert {(e["code"], e["message"]) for e in refused} == {
        ("too_many_webhooks", "this wire holds at most 5 webhooks; delete one first")
    }
    assert all(status in (201, 409) for status, _ in answers)
    status, listing = await get_json(http, server.base + "/v1/webhooks", headers=admin())
    assert status == 200 and sorted(w["id"] for w in listing["webhooks"]) == made
    async with http.delete(f"{server.base}/v1/webhooks/{made[0]}", headers=admin()) as resp:
        assert resp.status == 200
    status, body = await create_webhook(http, server, url=receiver.url, tags=["again"])
    assert status == 201, body
    status, body = await create_webhook(http, server, url=receiver.url, tags=["one-too-many"])
    assert status == 409 and body["error"]["code"] == "too_many_webhooks"


async def test_admin_routes_need_an_admin_token_and_admin_is_not_editor(
    make_server: ServerFactory, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    server = await make_server(**FAST)
    for headers in ({}, {"Authorization": f"Bearer {EDITOR_TOKEN}"}):
        async with http.get(server.base + "/v1/webhooks", headers=headers) as resp:
            assert resp.status == 401
        async with http.post(
            server.base + "/v1/webhooks",
            json={"url": receiver.url, "tags": ["world"]},
            headers=headers,
        ) as resp:
            assert resp.status == 401
    async with http.post(
        server.base + "/v1/items", json={"title": "x", "tags": ["world"]}, headers=admin()
    ) as resp:
        assert resp.status == 401
    for tail in ("0" * 32, "..%2Fx", "x" * 32):
        status, _ = await get_json(http, server.base + "/v1/webhooks/" + tail, headers=admin())
        assert status == 404


@pytest.mark.fault
@pytest.mark.timeout(120)
async def test_a_sigkilled_deliverer_is_taken_over_and_nothing_is_skipped(
    make_server: ServerFactory, http: aiohttp.ClientSession, receiver: Receiver, redis_url: str
) -> None:
    receiver.delay = 0.005
    server = await make_server(**FAST, deliver_webhooks=False)
    made = await add_webhook(http, server, receiver.url, tags=["world"])
    env = {
        "WIRE_REDIS_URL": redis_url,
        "WIRE_WEBHOOK_LEASE": "1",
        "WIRE_WEBHOOK_ALLOW_PRIVATE": "1",
        "WIRE_WEBHOOK_BACKOFF": "0.01",
    }
    first = WireProcess(["deliver"], env, free_port()).start()
    second: WireProcess | None = None
    try:
        published = [(await publish(http, server.base, f"n{i}"))["id"] for i in range(60)]
        await wait_for(lambda: len(receiver.ok()) >= 10, "the first deliveries", within=30)
        second = WireProcess(["deliver"], env, free_port()).start()
        first.kill()
        published += [(await publish(http, server.base, f"m{i}"))["id"] for i in range(60)]
        await wait_for(lambda: set(receiver.ok_ids()) >= set(published), "every item", within=60)
        for _ in range(500):  # the cursor write follows the receiver's 2xx
            if (await webhook_state(http, server, made["id"]))["cursor"] == published[-1]:
                break
            await asyncio.sleep(0.02)
        assert (await webhook_state(http, server, made["id"]))["cursor"] == published[-1]
    finally:
        first.kill()
        if second is not None:
            second.terminate()
    ids = receiver.ok_ids()
    assert sorted(set(ids), key=ids.index) == published  # none skipped, first sight in order
    # A duplicate is only ever the item in flight at the kill, sent again at once
    # with the same webhook-id: the ids never go backwards.
    assert len(ids) - len(set(ids)) <= 1
    assert all(parse_id(b) >= parse_id(a) for a, b in itertools.pairwise(ids))


async def test_private_targets_are_refused_at_delivery_too(
    make_server: ServerFactory, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    # Created where the setting allows it, delivered where it does not (the
    # setting changed, or a name now resolves to a private address).
    creator = await make_server(**FAST, deliver_webhooks=False)
    await make_server(
        admin_tokens=(ADMIN,), webhook_backoff=0.01, webhook_backoff_max=0.05, webhook_lease=1.0
    )
    by_literal = await add_webhook(http, creator, receiver.url, tags=["world"])
    by_name_url = f"https://localhost:{receiver.port}/hook"
    by_name = await add_webhook(http, creator, by_name_url, tags=["world"])
    await publish(http, creator.base, "must not leave")
    errors: dict[str, str] = {}
    for _ in range(500):
        for made in (by_literal, by_name):
            shown = await webhook_state(http, creator, made["id"])
            errors[made["id"]] = shown["last_error"] or ""
        if all(errors.values()):
            break
        await asyncio.sleep(0.02)
    assert "refused" in errors[by_literal["id"]]
    assert "non-public address" in errors[by_name["id"]]
    assert receiver.requests == []


class Yielding(RightOfWay):
    """A fan-out's right of way the test holds; says when a deliverer asks for it."""

    def __init__(self, most: float) -> None:
        super().__init__(most)
        self.asked = asyncio.Event()

    async def wait(self) -> bool:
        self.asked.set()
        return await super().wait()


async def run_deliverer(
    server: Server, way: RightOfWay
) -> tuple[Deliverer, asyncio.Task[None], Any]:
    """This app's deliverer, yielding to ``way`` (as in ``wire run``), as a task."""
    deliverer, watch = make_deliverer(server.app)
    deliverer.way = way
    return deliverer, asyncio.create_task(deliverer.run()), watch


async def test_in_wire_run_a_burst_goes_out_before_the_webhooks_then_they_follow(
    make_server: ServerFactory, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    """While the fan-out writes (held busy here), the deliverer POSTs nothing; once it
    rests, everything follows, in order, with a lease check made after the wait."""
    server = await make_server(**FAST, deliver_webhooks=False)
    made = await add_webhook(http, server, receiver.url, tags=["world"])
    way = Yielding(most=60)
    way.take()
    deliverer, task, watch = await run_deliverer(server, way)
    try:
        published = [(await publish(http, server.base, f"n{i}", ["world"]))["id"] for i in range(5)]
        await asyncio.wait_for(way.asked.wait(), 15)
        assert receiver.requests == []
        await webhook_control(http, server, made["id"], "pause")  # answered during the wait
        delivering = deliverer.tasks[made["id"]]
        way.give()
        # The lease is checked after the wait: paused, delivery stops without a POST.
        await asyncio.wait_for(asyncio.gather(delivering, return_exceptions=True), 15)
        assert receiver.requests == []
        await webhook_control(http, server, made["id"], "resume")
        await wait_for(lambda: len(receiver.ok()) >= 5, "5 deliveries")
        assert receiver.ok_ids() == published
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await watch.aclose()


async def test_a_fan_out_that_never_rests_still_lets_each_webhook_through(
    make_server: ServerFactory, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    server = await make_server(**FAST, deliver_webhooks=False)
    await add_webhook(http, server, receiver.url, tags=["world"])
    way = Yielding(most=0.02)
    way.take()  # and never given back
    _, task, watch = await run_deliverer(server, way)
    try:
        published = [(await publish(http, server.base, f"n{i}", ["world"]))["id"] for i in range(5)]
        await wait_for(lambda: len(receiver.ok()) >= 5, "5 deliveries")
        assert receiver.ok_ids() == published and way.busy
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await watch.aclose()
