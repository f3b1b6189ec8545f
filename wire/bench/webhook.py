"""The webhook scenario: one deliverer's items/s to a local receiver, and latency.

The bench registers a webhook (admin API) pointing at a receiver served from
its own process (an aiohttp server on a loopback port), so the wire under test
must allow private targets (``WIRE_WEBHOOK_ALLOW_PRIVATE=1``, which the bench
sets for the wire it starts). Three phases:

- **throughput**: N items published as fast as the posters can; items/s from
  the first request sent to the last item received (``items_per_s``; the
  publisher's process, which runs the deliverer, is busy publishing too);
- **backlog**: the webhook paused while N more are published, then resumed;
  items/s from the first item received to the last (``drain_items_per_s``:
  what the one deliverer sustains on its own) and the CPU its process spent
  per item (``deliverer_cpu_us_per_item``, when the bench started the wire);
- **latency**: items at a fixed rate; publish -> receiver arrival percentiles
  (each item carries the ``time.monotonic_ns()`` taken before its request).

Every delivery is checked: signature (Standard Webhooks, with the secret the
create answer showed), each id received once, in stream order, none missing,
and the webhook's own ``delivered`` counter agrees.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import math
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from wire.bench.poster import Published
from wire.bench.procs import cpu_seconds, free_port
from wire.bench.scenarios import Bench, percentile
from wire.core.ids import parse_id


@dataclass
class Arrival:
    """One request the receiver answered."""

    webhook_id: str
    at_ns: int
    stamp_ns: int | None


def verified(secret: str, msg_id: str, headers: Any, body: bytes) -> bool:
    """The Standard Webhooks check, done here (not with the wire's own signer)."""
    timestamp = headers.get("webhook-timestamp", "")
    key = base64.b64decode(secret.partition("_")[2] or "")
    signed = f"{msg_id}.{timestamp}.".encode() + body
    expected = "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return expected in headers.get("webhook-signature", "").split(" ")


@dataclass
class Receiver:
    """A webhook endpoint that records each request and answers 204 at once."""

    secret: str = ""
    port: int = field(default_factory=free_port)
    arrivals: list[Arrival] = field(default_factory=list)
    bad_signatures: int = 0
    runner: web.AppRunner | None = None
    _news: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def handle(self, request: web.Request) -> web.Response:
        at = time.monotonic_ns()
        body = await request.read()
        msg_id = request.headers.get("webhook-id", "")
        if not verified(self.secret, msg_id, request.headers, body):
            self.bad_signatures += 1
        subtitle = orjson.loads(body).get("item", {}).get("subtitle")
        stamp = int(subtitle) if isinstance(subtitle, str) and subtitle.isdigit() else None
        self.arrivals.append(Arrival(msg_id, at, stamp))
        self._news.set()
        return web.Response(status=204)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def wait(self, ids: list[str], within: float, stall: float) -> list[Arrival]:
        """The arrivals of ``ids`` (all of them, or what came before a stall or the end)."""
        wanted = set(ids)
        deadline = time.monotonic() + within
        last_news = time.monotonic()
        while True:
            got = [a for a in self.arrivals if a.webhook_id in wanted]
            if {a.webhook_id for a in got} >= wanted:
                return got
            now = time.monotonic()
            if now > deadline or now - last_news > stall:
                return got
            self._news.clear()
            try:
                await asyncio.wait_for(self._news.wait(), 0.2)
                last_news = time.monotonic()
            except TimeoutError:
                pass


def check(label: str, got: list[Arrival], expected: list[str], bench: Bench) -> bool:
    """Each expected id received exactly once, in stream order; problems to bench.failures."""
    ids = [a.webhook_id for a in got]
    problems = []
    missing = set(expected) - set(ids)
    if missing:
        problems.append(f"{len(missing)} of {len(expected)} items never arrived")
    if len(set(ids)) < len(ids):
        problems.append(f"{len(ids) - len(set(ids))} items arrived twice")
    firsts = sorted(set(ids), key=ids.index)
    if firsts != sorted(firsts, key=parse_id):
        problems.append("items arrived out of stream order")
    for p in problems:
        bench.failures.append(f"{label}: {p}")
    return not problems


class Scenario:
    """One webhook, one receiver, the two phases."""

    def __init__(self, bench: Bench, admin_token: str, deliverer_pid: int | None) -> None:
        self.bench = bench
        self.pid = deliverer_pid
        self.base = f"http://{bench.poster.host}:{bench.poster.port}"
        self.headers = {"Authorization": f"Bearer {admin_token}"}
        self.receiver = Receiver()
        self.tag = f"{bench.tag}/webhook"

    async def run(self) -> dict[str, Any]:
        label = "webhook"
        progress = self.bench.progress
        progress.step(f"{label}: receiver, webhook, first delivery")
        await self.receiver.start()
        try:
            async with aiohttp.ClientSession() as http:
                made = await self.admin(http, "POST", "/v1/webhooks", {
                    "url": self.receiver.url, "tags": [self.tag], "description": "wire bench",
                })
                webhook = made["webhook"]
                self.receiver.secret = webhook["secret"]
                try:
                    return await self.phases(http, webhook["id"])
                finally:
                    await self.admin(http, "DELETE", f"/v1/webhooks/{webhook['id']}")
        finally:
            await self.receiver.stop()

    async def phases(self, http: aiohttp.ClientSession, webhook_id: str) -> dict[str, Any]:
        cfg, bench = self.bench.cfg, self.bench
        # The deliverer takes a new webhook up at its next lease round; one item
        # delivered also opens the kept-alive connection before measuring.
        first = await self.publish(1, 1)
        await self.receiver.wait(first.ids, cfg.timeout + 15, cfg.timeout + 15)
        ok = check("webhook first delivery", self.mine(first.ids), first.ids, bench)
        throughput = await self.throughput()
        backlog = await self.backlog(http, webhook_id)
        latency = await self.latency()
        shown = await self.admin(http, "GET", f"/v1/webhooks/{webhook_id}")
        total = 1 + throughput["items"] + backlog["items"] + latency["items"]
        delivered = shown["webhook"]["delivered"]
        if delivered != total:
            bench.failures.append(f"webhook: its delivered counter says {delivered}, not {total}")
        if self.receiver.bad_signatures:
            bench.failures.append(
                f"webhook: {self.receiver.bad_signatures} deliveries failed signature checks"
            )
        verified = all([ok, throughput.pop("verified"), backlog.pop("verified"),
                        latency.pop("verified")])
        return {
            **throughput,
            "drain_items_per_s": backlog["drain_items_per_s"],
            "drain_seconds": backlog["drain_seconds"],
            "deliverer_cpu_us_per_item": backlog["deliverer_cpu_us_per_item"],
            **{f"latency_{k}": v for k, v in latency.items()},
            "bad_signatures": self.receiver.bad_signatures,
            "verified": verified and delivered == total and not self.receiver.bad_signatures,
        }

    async def throughput(self) -> dict[str, Any]:
        """Live: items published as fast as possible while delivered."""
        cfg, progress = self.bench.cfg, self.bench.progress
        n = cfg.webhook_items
        label = f"webhook {n:,} items as fast as published"
        progress.step(label)
        pub = await self.publish(n, cfg.posters)
        got = await self.receiver.wait(pub.ids, cfg.timeout, min(5.0, cfg.timeout))
        ok = self.bench.published_ok(label, pub, n) and check(label, got, pub.ids, self.bench)
        last = max((a.at_ns for a in got), default=pub.finished)
        seconds = max(1, last - pub.started) / 1e9
        result = {
            "items": n,
            "seconds": seconds,
            "items_per_s": len({a.webhook_id for a in got}) / seconds,
            "publish_seconds": (pub.finished - pub.started) / 1e9,
            "verified": ok,
        }
        progress.done(
            f"{label}: {result['items_per_s']:,.0f} items/s delivered "
            f"(published in {result['publish_seconds'] * 1000:.0f} ms)"
        )
        return result

    async def backlog(self, http: aiohttp.ClientSession, webhook_id: str) -> dict[str, Any]:
        """Paused while N items are published, then resumed: the deliverer alone."""
        cfg, progress = self.bench.cfg, self.bench.progress
        n = cfg.webhook_items
        label = f"webhook backlog of {n:,} items after resume"
        progress.step(label)
        await self.admin(http, "POST", f"/v1/webhooks/{webhook_id}/pause")
        pub = await self.publish(n, cfg.posters)
        cpu = cpu_seconds([self.pid]) if self.pid else math.nan
        await self.admin(http, "POST", f"/v1/webhooks/{webhook_id}/resume")
        # It is taken up at the deliverer's next lease round: time first to last arrival.
        got = await self.receiver.wait(pub.ids, cfg.timeout + 15, cfg.timeout + 15)
        cpu = (cpu_seconds([self.pid]) if self.pid else math.nan) - cpu
        ok = self.bench.published_ok(label, pub, n) and check(label, got, pub.ids, self.bench)
        first = min((a.at_ns for a in got), default=0)
        last = max((a.at_ns for a in got), default=0)
        result = {
            "items": n,
            "drain_seconds": (last - first) / 1e9,
            "drain_items_per_s": (len(got) - 1) / max(1, last - first) * 1e9,
            # Robust on a shared machine, unlike the rate: the deliverer's process.
            "deliverer_cpu_us_per_item": cpu / max(1, len(got)) * 1e6,
            "verified": ok,
        }
        progress.done(
            f"{label}: {result['drain_items_per_s']:,.0f} items/s delivered, "
            f"{result['deliverer_cpu_us_per_item']:.0f} us of deliverer CPU each"
        )
        return result

    async def latency(self) -> dict[str, Any]:
        cfg, progress = self.bench.cfg, self.bench.progress
        count = max(1, round(cfg.rate * cfg.latency_seconds))
        label = f"webhook latency at {cfg.rate:g}/s"
        progress.step(label)
        pub = await self.bench.poster.steady(
            count, cfg.rate, tag=self.tag, run=self.bench.run, body=self.bench.body
        )
        got = await self.receiver.wait(pub.ids, cfg.timeout, min(5.0, cfg.timeout))
        ok = self.bench.published_ok(label, pub, count) and check(label, got, pub.ids, self.bench)
        lat = [(a.at_ns - a.stamp_ns) / 1e6 for a in got if a.stamp_ns is not None]
        result = {
            "items": count,
            "rate": cfg.rate,
            "p50_ms": percentile(lat, 50),
            "p90_ms": percentile(lat, 90),
            "p99_ms": percentile(lat, 99),
            "max_ms": max(lat, default=math.nan),
            "verified": ok,
        }
        progress.done(
            f"{label}: p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, "
            f"max {result['max_ms']:.1f} ms ({len(lat)} items)"
        )
        return result

    def mine(self, ids: list[str]) -> list[Arrival]:
        wanted = set(ids)
        return [a for a in self.receiver.arrivals if a.webhook_id in wanted]

    async def publish(self, count: int, conns: int) -> Published:
        return await self.bench.poster.publish(
            count, tag=self.tag, conns=conns, run=self.bench.run, body=self.bench.body
        )

    async def admin(
        self, http: aiohttp.ClientSession, method: str, path: str, body: Any = None
    ) -> Any:
        async with http.request(method, self.base + path, json=body, headers=self.headers) as r:
            answer = await r.json()
            if r.status >= 300:
                raise RuntimeError(f"webhook admin API: {method} {path}: {r.status} {answer}")
            return answer


async def scenario(
    bench: Bench, admin_token: str | None, deliverer_pid: int | None = None
) -> dict[str, Any]:
    """Run the webhook scenario (skipped without an admin token of the wire).

    ``deliverer_pid``: the process running the deliverer (the publisher the
    bench started), whose CPU per delivered item the backlog phase reports.
    """
    if not admin_token:
        bench.progress.done("webhook: skipped (needs an admin token: WIRE_ADMIN_TOKENS)")
        return {"skipped": "no admin token"}
    return await Scenario(bench, admin_token, deliverer_pid).run()
