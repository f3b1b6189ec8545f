"""Hostile-client review of partner delivery and the batch endpoint.

Real HTTP on loopback, real Redis, real webhook receivers (aiohttp servers in
the test) and, where memory is measured, a real ``wire deliver`` process.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson
import redis
from aiohttp import web

from tests.conftest import ServerFactory
from tests.support import (
    ADMIN,
    WEBHOOKS_FAST,
    Receiver,
    WireProcess,
    admin,
    create_webhook,
    free_port,
    get_json,
    publish,
    wait_for,
    webhook_state,
)
from wire.storage import keys

FAST = WEBHOOKS_FAST


@dataclass
class StreamingReceiver(Receiver):
    """A webhook endpoint whose 2xx answer carries a body chosen by the test."""

    headers: dict[str, str] = field(default_factory=dict)
    chunks: list[bytes] = field(default_factory=list)
    endless: bool = False

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(({}, await request.read()))
        resp = web.StreamResponse(status=200, headers=self.headers)
        await resp.prepare(request)
        try:
            for chunk in self.chunks:
                await resp.write(chunk)
            deadline = time.monotonic() + 60
            while self.endless and time.monotonic() < deadline:
                await resp.write(b"x" * 1024)
                await asyncio.sleep(0.05)
        except (ConnectionError, RuntimeError):
            pass  # the deliverer hung up: what a well-behaved one does
        return resp


def peak_rss_mib(pid: int) -> float:
    """The process's peak resident memory (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


# --- webhook registration -----------------------------------------------------------


async def test_a_malformed_webhook_url_is_a_400_naming_url_never_a_500(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    server = await make_server(**FAST)
    for url in (
        "https://[::1/hook",  # an unclosed IPv6 bracket
        "https://\u2100.com/hook",  # a host that NFKC-normalizes to "a/c.com"
        "https://a..b/hook",  # an empty DNS label
        "https://" + "a" * 70 + ".example/hook",  # a DNS label over 63 characters
        "http://127.0.0.1:99999/hook",  # a port out of range: never deliverable
        "http://127.0.0.1:http/hook",  # a port that is not a number
    ):
        status, answer = await create_webhook(http, server, url=url, tags=["world"])
        assert status == 400, (url, status, answer)
        assert answer["error"]["code"] == "invalid_field", (url, answer)
        assert answer["error"]["field"] == "url", (url, answer)
    status, answer = await get_json(http, server.base + "/v1/webhooks", headers=admin())
    assert status == 200 and answer["webhooks"] == []


async def test_a_partner_that_is_not_a_name_is_refused_not_taken_for_no_partner(
    make_server: ServerFactory, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """``"partner": false`` (or 0, [], {}) from a careless client must not create a
    webhook that receives everything: only a missing or null partner means none."""
    grants = tmp_path / "partners.toml"
    grants.write_text('[[token]]\ntoken = "p-sport"\nname = "Partner A"\ntags = ["sport"]\n')
    server = await make_server(**FAST, entitlements=grants)
    partners: tuple[object, ...] = (False, 0, [], {})
    for partner in partners:
        status, answer = await create_webhook(
            http, server, url="http://127.0.0.1:9/hook", tags=["*"], partner=partner
        )
        assert status == 400, (partner, status, answer)
        assert answer["error"]["field"] == "partner", answer
    status, answer = await get_json(http, server.base + "/v1/webhooks", headers=admin())
    assert status == 200 and answer["webhooks"] == []


async def test_a_webhooks_filter_is_bounded_like_a_subscriptions(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    """Thousands of tags or languages on one webhook would be matched against
    every item the deliverer reads: refused, as on a WebSocket, naming the field."""
    server = await make_server(**FAST, max_tags=5)
    url = "http://127.0.0.1:9/hook"
    many = [f"topic-{n}" for n in range(6)]
    status, answer = await create_webhook(http, server, url=url, tags=many)
    assert status == 400 and answer["error"]["code"] == "too_many_tags", answer
    assert answer["error"]["field"] == "tags", answer
    languages = ["en", "fr", "de", "it", "es", "pt"]
    status, answer = await create_webhook(http, server, url=url, tags=["*"], languages=languages)
    assert status == 400 and answer["error"]["field"] == "languages", answer
    # At the limit both are fine; duplicates count once.
    status, answer = await create_webhook(http, server, url=url, tags=[*many[:5], "TOPIC-0"])
    assert status == 201, answer
    status, answer = await create_webhook(
        http, server, url=url, tags=["*"], languages=languages[:5]
    )
    assert status == 201, answer


# --- what a receiver answers ----------------------------------------------------------


def gzip_of_zeros(size: int) -> bytes:
    """A gzip body of ``size`` zero bytes (about a thousandth of that on the wire)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(1 << 20)
    parts = [packer.compress(block) for _ in range(size >> 20)]
    return b"".join(parts) + packer.flush()


async def test_a_receivers_gzip_bomb_answer_is_never_inflated_by_the_deliverer(
    make_server: ServerFactory, http: aiohttp.ClientSession, redis_url: str
) -> None:
    """A receiver answers 2xx with ~1 MB of gzip that inflates to 1 GiB: the
    deliverer (inside ``wire run``'s gateway process too) must not read it
    into memory."""
    receiver = StreamingReceiver()
    receiver.headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
    receiver.chunks = [gzip_of_zeros(1 << 30)]
    await receiver.start()
    server = await make_server(**FAST, deliver_webhooks=False)
    status, made = await create_webhook(http, server, url=receiver.url, tags=["world"])
    assert status == 201, made
    env = {
        "WIRE_REDIS_URL": redis_url,
        "WIRE_WEBHOOK_LEASE": "1",
        "WIRE_WEBHOOK_ALLOW_PRIVATE": "1",
        "WIRE_WEBHOOK_BACKOFF": "0.01",
    }
    webhook_id = made["webhook"]["id"]
    deliverer = WireProcess(["deliver"], env, free_port()).start()
    try:
        with redis.Redis.from_url(redis_url) as client:
            await wait_for(
                lambda: client.exists(keys.webhook_lease(webhook_id)) == 1,
                "wire deliver to take the webhook's lease",
                within=30,
            )
        assert deliverer.proc is not None
        before = peak_rss_mib(deliverer.proc.pid)
        await publish(http, server.base, "bomb", ["world"])
        await wait_for(lambda: len(receiver.requests) >= 1, "the POST", within=30)
        deadline = time.monotonic() + 60
        while (await webhook_state(http, server, webhook_id))["delivered"] < 1:
            assert time.monotonic() < deadline, "the 2xx was never counted"
            await asyncio.sleep(0.05)
        grown = peak_rss_mib(deliverer.proc.pid) - before
        assert grown < 128, f"the deliverer's peak memory grew by {grown:.0f} MiB"
        assert len(receiver.requests) == 1
    finally:
        deliverer.kill()
        await receiver.stop()


async def test_a_2xx_whose_body_never_ends_is_one_delivery_not_a_retry_loop(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    """The status line and headers say 200; the body trickles on. The item is
    delivered (the receiver has it), so it must not be POSTed again and again."""
    receiver = StreamingReceiver()
    receiver.endless = True
    await receiver.start()
    try:
        server = await make_server(**FAST, webhook_timeout=1.0)
        status, made = await create_webhook(http, server, url=receiver.url, tags=["world"])
        assert status == 201, made
        await publish(http, server.base, "once", ["world"])
        webhook_id = made["webhook"]["id"]
        shown = await webhook_state(http, server, webhook_id)
        deadline = time.monotonic() + 15
        while shown["delivered"] < 1 and len(receiver.requests) < 3:
            assert time.monotonic() < deadline, shown
            await asyncio.sleep(0.05)
            shown = await webhook_state(http, server, webhook_id)
        assert shown["delivered"] == 1 and shown["last_status"] == 200, shown
        assert len(receiver.requests) == 1
    finally:
        await receiver.stop()


async def test_an_ipv4_address_embedded_in_ipv6_is_checked_like_the_ipv4_one(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    """NAT64 (64:ff9b::/96, what an IPv6-only cloud subnet uses to reach IPv4),
    6to4 and IPv4-compatible addresses carry an IPv4 address: the metadata
    service or a private one there must be refused as it is written plainly."""
    server = await make_server(admin_tokens=(ADMIN,))
    for url in (
        "https://[64:ff9b::a9fe:a9fe]/latest",  # NAT64 of 169.254.169.254
        "https://[64:ff9b::10.0.0.5]/hook",  # NAT64 of a private address
        "https://[64:ff9b:1::a00:5]/hook",  # the local-use NAT64 prefix (RFC 8215)
        "https://[2002:7f00:1::]/hook",  # 6to4 of 127.0.0.1
        "https://[::169.254.169.254]/latest",  # IPv4-compatible
    ):
        status, answer = await create_webhook(http, server, url=url, tags=["world"])
        assert status == 400, (url, status, answer)
        assert answer["error"]["field"] == "url", (url, answer)
    # A public IPv4 address behind NAT64 stays deliverable.
    nat64 = "https://[64:ff9b::808:808]/"
    status, answer = await create_webhook(http, server, url=nat64, tags=["world"])
    assert status == 201, answer


async def test_a_since_beyond_the_newest_item_still_gets_the_items_that_follow(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    """As on the sockets, a ``since`` at or beyond the newest item replays
    nothing and live items follow: a webhook must not silently skip every
    item until the clock passes a mistyped (or another wire's) id."""
    receiver = StreamingReceiver()
    await receiver.start()
    try:
        server = await make_server(**FAST)
        await publish(http, server.base, "before", ["world"])
        status, made = await create_webhook(
            http, server, url=receiver.url, tags=["world"], since="99999999999999-0"
        )
        assert status == 201, made
        after = await publish(http, server.base, "after", ["world"])
        webhook_id = made["webhook"]["id"]
        shown = await webhook_state(http, server, webhook_id)
        deadline = time.monotonic() + 10
        while shown["delivered"] < 1:
            assert time.monotonic() < deadline, f"nothing delivered: {shown}"
            await asyncio.sleep(0.05)
            shown = await webhook_state(http, server, webhook_id)
        assert shown["cursor"] == after["id"]
        assert [orjson.loads(b)["item"]["id"] for _, b in receiver.requests] == [after["id"]]
    finally:
        await receiver.stop()
