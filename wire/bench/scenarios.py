"""The bench scenarios, run against one gateway (ours or the naive baseline) at a time.

Every scenario checks what it measured: each subscriber must receive exactly
the items it should (a count per connection), and the sampled subscribers the
exact ids, in stream order, without duplicates. Problems are collected in
``Bench.failures``; the command exits non-zero when there are any.
"""

from __future__ import annotations

import asyncio
import math
import sys
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from wire.bench.batch import publish_batches
from wire.bench.poster import Poster, Published
from wire.bench.procs import Clients, cpu_seconds, rss_bytes
from wire.core.ids import parse_id


@dataclass
class Config:
    """Sizes and switches of one run (the CLI flags)."""

    scenarios: tuple[str, ...] = ("burst", "latency", "memory", "resume", "publisher", "webhook")
    conns: int = 1000
    items: int = 200
    posters: int = 8
    #: Bursts per system: one burst's figure swings by a third between runs here.
    bursts: int = 3
    rate: float = 20.0
    latency_seconds: float = 5.0
    latency_conns: tuple[int, ...] = (1000, 10_000)
    memory_conns: int = 10_000
    resume_conns: int = 5000
    resume_back: int = 100
    resume_live: int = 10
    publish_items: int = 5000
    publish_clients: int = 16
    webhook_items: int = 2000
    batch_items: int = 20_000
    batch_size: int = 500
    batch_clients: int = 4
    sample: int = 100
    #: Wire's subscribers ask for batched frames (``?batch=1``); the baselines
    #: have one frame per item whatever is asked.
    batch: bool = True
    client_procs: int = 1
    connect_concurrency: int = 500
    body: int = 0
    timeout: float = 60.0
    baseline: bool = True
    baseline_latency_max: int = 10_000
    #: The token subscribers present (``?token=``); empty: none. With
    #: ``WIRE_SUBSCRIBER_TOKENS=name:token`` they are a named partner, which
    #: the delivery ledger records.
    subscriber_token: str = ""
    #: The language wire's subscribers filter on (``&lang=``); empty: none. The
    #: items are published without one, so in the server's default language.
    lang: str = ""
    #: ``wire run --workers N`` systems to run (one per N) instead of the separate gateway.
    run_workers: tuple[int, ...] = ()
    #: Shapes of wire measured, the first under the name ``wire`` (empty with --url).
    shapes: tuple[str, ...] = ("run", "split")
    fastpath: bool = True
    naive: bool = True


@dataclass
class System:
    """A gateway under test."""

    name: str
    host: str
    port: int
    pid: int | None = None
    groups: dict[str, int] = field(default_factory=dict)
    #: The publisher its items are posted to ("" for the run's default one).
    publisher_url: str = ""
    #: Processes serving its port (``--workers``): its ``/metrics`` answer for one.
    processes: int = 1


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (nearest rank) of ``values``; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


class Progress:
    """One status line on stderr (rewritten in place on a terminal)."""

    def __init__(self) -> None:
        self.label = ""
        self.tty = sys.stderr.isatty()
        self.last = 0.0

    def step(self, label: str) -> None:
        self.label = label
        self.say(f"{label} ...", force=True)

    def say(self, text: str, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < (0.25 if self.tty else 2.0):
            return
        self.last = now
        if self.tty:
            sys.stderr.write(f"\r\x1b[2K[bench] {text}")
        else:
            sys.stderr.write(f"[bench] {text}\n")
        sys.stderr.flush()

    def done(self, text: str) -> None:
        if self.tty:
            sys.stderr.write(f"\r\x1b[2K[bench] {text}\n")
        else:
            sys.stderr.write(f"[bench] {text}\n")
        sys.stderr.flush()

    def counters(self, subscribed: int, delivered: int) -> None:
        self.say(f"{self.label}: {subscribed:,} subscribed, {delivered:,} items delivered")


class Bench:
    """Drives the client processes and the publisher for the scenarios."""

    def __init__(
        self, config: Config, clients: Clients, poster: Poster, run_id: str, progress: Progress
    ) -> None:
        self.cfg = config
        self.clients = clients
        self.poster = poster
        self.run = run_id
        self.tag = f"bench-{run_id}"
        self.progress = progress
        self.failures: list[str] = []

    # -- client groups ---------------------------------------------------------

    async def connect(
        self,
        system: System,
        group: str,
        n: int,
        query: str = "",
        concurrency: int | None = None,
        tag: str | None = None,
    ) -> dict[str, Any]:
        k = self.clients.n
        shares = [n // k + (1 if i < n % k else 0) for i in range(k)]
        samples = [self.cfg.sample // k + (1 if i < self.cfg.sample % k else 0) for i in range(k)]
        path = f"/v1/ws?tags={tag or self.tag}{query}"
        if self.cfg.batch and system.name.startswith("wire"):
            path += "&batch=1"
        if self.cfg.subscriber_token:
            path += "&token=" + urllib.parse.quote(self.cfg.subscriber_token, safe="")
        if self.cfg.lang and system.name.startswith("wire"):
            path += "&lang=" + urllib.parse.quote(self.cfg.lang, safe="")
        started = time.monotonic()
        results = await self.clients.all(
            "connect",
            lambda i: {
                "group": f"{system.name}-{group}",
                "host": system.host,
                "port": system.port,
                "path": path,
                "n": shares[i],
                "sample": min(samples[i], shares[i]),
                "concurrency": max(1, (concurrency or self.cfg.connect_concurrency) // k),
                "within": self.cfg.timeout,
            },
        )
        system.groups[group] = n
        failed = sum(r["failed"] for r in results)
        if failed:
            errors = [e for r in results for e in r["errors"]][:3]
            self.failures.append(
                f"{system.name} {group}: {failed} of {n} connections failed: {errors}"
            )
        return {
            "subscribed": sum(r["subscribed"] for r in results),
            "failed": failed,
            "seconds": time.monotonic() - started,
        }

    async def reset(self, system: System, group: str) -> None:
        await self.clients.all("reset", lambda i: {"group": f"{system.name}-{group}"})

    async def close(self, system: System, group: str) -> None:
        if system.groups.pop(group, None) is not None:
            await self.clients.all("close", lambda i: {"group": f"{system.name}-{group}"})

    async def wait(self, system: System, group: str, expect: int) -> dict[str, Any]:
        results = await self.clients.all(
            "wait",
            lambda i: {
                "group": f"{system.name}-{group}",
                "expect": expect,
                "within": self.cfg.timeout,
                "stall": min(5.0, self.cfg.timeout),
            },
        )
        firsts = [r["first_rx"] for r in results if r["first_rx"]]
        closed: dict[str, int] = {}
        for r in results:
            for code, k in r["closed"].items():
                closed[code] = closed.get(code, 0) + k
        return {
            "conns": sum(r["conns"] for r in results),
            "delivered": sum(r["delivered"] for r in results),
            "short": sum(r["short"] for r in results),
            "over": sum(r["over"] for r in results),
            "min": min(r["min"] for r in results),
            "max": max(r["max"] for r in results),
            "closed": closed,
            "retries": sum(r["retries"] for r in results),
            "first_rx": min(firsts, default=0),
            "last_rx": max(r["last_rx"] for r in results),
            "sampled_ids": [ids for r in results for ids in r["sampled_ids"]],
            "latency_us": [lat for r in results for lat in r["latency_us"]],
        }

    def verify(self, label: str, got: dict[str, Any], expected_ids: list[str]) -> bool:
        """Exactly the expected items on every connection; exact ids on sampled ones."""
        problems = []
        expect = len(expected_ids)
        if got["short"]:
            problems.append(
                f"{got['short']} of {got['conns']} connections missed items "
                f"(fewest received: {got['min']} of {expect})"
            )
        if got["over"]:
            problems.append(
                f"{got['over']} of {got['conns']} connections received extra items "
                f"(most received: {got['max']} of {expect})"
            )
        if got["closed"]:
            problems.append(f"connections closed by the server: {got['closed']}")
        for ids in got["sampled_ids"]:
            if ids == expected_ids:
                continue
            if len(set(ids)) < len(ids):
                problems.append(f"a sampled connection received duplicates ({len(ids)} ids)")
            elif ids != sorted(ids, key=parse_id):
                problems.append("a sampled connection received items out of order")
            else:
                missing = sorted(set(expected_ids) - set(ids), key=parse_id)
                extra = sorted(set(ids) - set(expected_ids), key=parse_id)
                problems.append(
                    f"a sampled connection got the wrong ids: missing {missing[:3]}, "
                    f"unexpected {extra[:3]}"
                )
            break
        for p in problems:
            self.failures.append(f"{label}: {p}")
        return not problems

    def cpu(self, system: System) -> tuple[float, float]:
        """CPU seconds used so far by the gateway (nan if unknown) and by the clients."""
        gateway = cpu_seconds([system.pid]) if system.pid else math.nan
        return gateway, cpu_seconds([p.pid for p in self.clients.procs])

    async def settle(self, system: System, within: float = 10.0) -> None:
        """Wait until the gateway is idle (under 5% of a core for 0.2 s).

        What a scenario leaves behind (thousands of connections closing, their
        garbage) must not be billed to the next one.
        """
        await asyncio.sleep(0.2)
        if system.pid is None:
            await asyncio.sleep(1.0)
            return
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            used = cpu_seconds([system.pid])
            await asyncio.sleep(0.2)
            if cpu_seconds([system.pid]) - used < 0.01:
                return

    @staticmethod
    def cpu_per_delivery(
        before: tuple[float, float], after: tuple[float, float], deliveries: int
    ) -> dict[str, float]:
        """Microseconds of gateway and client CPU per delivery: robust on a busy machine."""
        n = max(1, deliveries)
        return {
            "gateway_cpu_us_per_delivery": (after[0] - before[0]) / n * 1e6,
            "client_cpu_us_per_delivery": (after[1] - before[1]) / n * 1e6,
        }

    # -- scenarios -------------------------------------------------------------

    def burst_tag(self, system: System) -> str:
        """The tag of ``system``'s burst subscribers and items: every gateway reads
        the one stream, and while the systems take turns each must fan out only
        its own bursts."""
        return f"{self.tag}/burst-{system.name}"

    async def burst_connect(self, system: System) -> dict[str, Any]:
        """The burst's N subscribers on ``system``, on its own burst tag."""
        cfg = self.cfg
        self.progress.step(f"{system.name} burst: {cfg.conns:,} subscribers")
        return await self.connect(system, "burst", cfg.conns, tag=self.burst_tag(system))

    async def one_burst(self, system: System, n: int) -> dict[str, Any]:
        """Burst ``n`` (from 0) on ``system``: M items published as fast as the
        posters can to the N subscribers; deliveries/s from the first request
        sent to the last frame received, each subscriber verified."""
        cfg = self.cfg
        label = f"{system.name} burst {cfg.conns:,}x{cfg.items} #{n + 1}"
        self.progress.step(label)
        if n:
            await self.reset(system, "burst")
        await self.settle(system)
        cpu0 = self.cpu(system)
        pub = await self.poster.publish(
            cfg.items, tag=self.burst_tag(system), conns=cfg.posters, run=self.run, body=self.body
        )
        got = await self.wait(system, "burst", len(pub.ids))
        cpu1 = self.cpu(system)
        ok = self.verify(label, got, pub.ids) and self.published_ok(label, pub, cfg.items)
        seconds = max(got["last_rx"] - pub.started, 1) / 1e9
        one = {
            "deliveries": got["delivered"],
            "seconds": seconds,
            "deliveries_per_s": got["delivered"] / seconds,
            "publish_seconds": (pub.finished - pub.started) / 1e9,
            "cpu": [cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]],
            "verified": ok,
        }
        self.progress.done(f"{label}: {one['deliveries_per_s']:,.0f} deliveries/s")
        return one

    def burst_result(
        self, connected: dict[str, Any], bursts: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """A system's bursts summed up: the median burst's figures, each burst's rate,
        CPU per delivery over all of them."""
        median = sorted(bursts, key=lambda b: b["deliveries_per_s"])[len(bursts) // 2]
        cpu = [sum(b["cpu"][i] for b in bursts) for i in (0, 1)]
        return {
            "conns": self.cfg.conns,
            "items": self.cfg.items,
            **{
                k: median[k]
                for k in ("deliveries", "seconds", "deliveries_per_s", "publish_seconds")
            },
            "bursts": len(bursts),
            "each_deliveries_per_s": [b["deliveries_per_s"] for b in bursts],
            "connect_seconds": connected["seconds"],
            **self.cpu_per_delivery(
                (0.0, 0.0), (cpu[0], cpu[1]), sum(b["deliveries"] for b in bursts)
            ),
            "verified": all(b["verified"] for b in bursts),
        }

    async def latency(self, system: System, n: int) -> dict[str, Any]:
        """A steady rate of single items to n subscribers: publish->deliver percentiles."""
        cfg = self.cfg
        label = f"{system.name} latency {n:,} conns at {cfg.rate:g}/s"
        self.progress.step(label)
        group = next((g for g, k in system.groups.items() if k == n), None)
        if group is None:
            group = f"latency{n}"
            await self.connect(system, group, n)
        await self.reset(system, group)
        await self.settle(system)
        cpu0 = self.cpu(system)
        count = max(1, round(cfg.rate * cfg.latency_seconds))
        pub = await self.poster.steady(
            count, cfg.rate, tag=f"{self.tag}/latency", run=self.run, body=self.body
        )
        got = await self.wait(system, group, len(pub.ids))
        cpu = self.cpu_per_delivery(cpu0, self.cpu(system), got["delivered"])
        ok = self.verify(label, got, pub.ids) and self.published_ok(label, pub, count)
        lat = [x / 1000 for per_conn in got["latency_us"] for x in per_conn]
        first, spread = _per_item(got)
        result = {
            "conns": n,
            "items": count,
            "rate": cfg.rate,
            "samples": len(lat),
            "p50_ms": percentile(lat, 50),
            "p90_ms": percentile(lat, 90),
            "p99_ms": percentile(lat, 99),
            "max_ms": max(lat, default=math.nan),
            # Per item, over the sampled connections: when the first one had it
            # (publish, Redis, read) and how long until the last one did (fan-out).
            "first_p50_ms": percentile(first, 50),
            "first_p99_ms": percentile(first, 99),
            "spread_p50_ms": percentile(spread, 50),
            "spread_p99_ms": percentile(spread, 99),
            **cpu,
            "verified": ok,
        }
        self.progress.done(
            f"{label}: p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, "
            f"max {result['max_ms']:.1f} ms ({len(lat):,} samples)"
        )
        return result

    async def memory(self, system: System) -> dict[str, Any]:
        """RSS growth of the gateway for N idle subscribed connections (left open)."""
        n = self.cfg.memory_conns
        label = f"{system.name} memory {n:,} idle conns"
        self.progress.step(label)
        if system.pid is None:
            self.progress.done(f"{label}: skipped (no gateway pid; pass --gateway-pid)")
            return {"skipped": "no gateway pid"}
        await self.settle(system)
        before = rss_bytes(system.pid)
        conn = await self.connect(system, f"idle{n}", n)
        await self.settle(system)
        after = rss_bytes(system.pid)
        result = {
            "conns": n,
            "rss_before": before,
            "rss_after": after,
            "per_conn_bytes": (after - before) / max(1, conn["subscribed"]),
            "connect_seconds": conn["seconds"],
            "connects_per_s": conn["subscribed"] / conn["seconds"],
        }
        self.progress.done(
            f"{label}: {result['per_conn_bytes'] / 1024:.1f} KiB per connection "
            f"(connected in {conn['seconds']:.1f} s)"
        )
        return result

    async def resume(self, system: System) -> dict[str, Any]:
        """N clients reconnect at once with ``since`` K items back; time until caught up."""
        cfg = self.cfg
        n, back = cfg.resume_conns, cfg.resume_back
        label = f"{system.name} resume storm {n:,} conns, since {back} back"
        self.progress.step(label)
        marker = await self.publish(1, 1, "resume")
        missed = await self.publish(back, cfg.posters, "resume")
        if not marker.ids:
            self.failures.append(f"{label}: could not publish")
            return {}
        await self.settle(system)
        cpu0 = self.cpu(system)
        started = time.monotonic_ns()
        since = f"&since={marker.ids[0]}"
        _, live = await asyncio.gather(
            self.connect(system, "resume", n, since, concurrency=n),
            self.publish(cfg.resume_live, 2, "resume"),
        )
        expected = missed.ids + live.ids
        got = await self.wait(system, "resume", len(expected))
        cpu = self.cpu(system)
        ok = (
            self.verify(label, got, expected)
            and self.published_ok(label, missed, back)
            and self.published_ok(label, live, cfg.resume_live)
        )
        seconds = (got["last_rx"] - started) / 1e9
        result = {
            "conns": n,
            "back": back,
            "live": cfg.resume_live,
            "seconds": seconds,
            "deliveries": got["delivered"],
            "retried_1013": got["retries"],
            "gateway_cpu_s": cpu[0] - cpu0[0],
            "client_cpu_s": cpu[1] - cpu0[1],
            "verified": ok,
        }
        retried = f" ({got['retries']} told to retry with 1013, and did)" if got["retries"] else ""
        self.progress.done(f"{label}: all caught up in {seconds:.2f} s{retried}")
        await self.close(system, "resume")
        return result

    async def publisher(self) -> dict[str, Any]:
        """Accepted items/s from 16 concurrent clients, each with an Idempotency-Key."""
        cfg = self.cfg
        label = f"publisher {cfg.publish_items:,} items, {cfg.publish_clients} clients"
        self.progress.step(label)
        pub = await self.publish(cfg.publish_items, cfg.publish_clients, "publisher")
        ok = self.published_ok(label, pub, cfg.publish_items)
        seconds = (pub.finished - pub.started) / 1e9
        result = {
            "items": cfg.publish_items,
            "clients": cfg.publish_clients,
            "accepted": len(pub.ids),
            "seconds": seconds,
            "items_per_s": len(pub.ids) / seconds,
            "verified": ok,
        }
        self.progress.done(f"{label}: {result['items_per_s']:,.0f} items/s accepted")
        return result

    async def publisher_batch(self) -> dict[str, Any]:
        """Accepted items/s through batch POST /v1/items (see wire.bench.batch)."""
        cfg = self.cfg
        label = (
            f"publisher batch {cfg.batch_items:,} items, batches of {cfg.batch_size}, "
            f"{cfg.batch_clients} clients"
        )
        self.progress.step(label)
        result = await publish_batches(
            self.poster,
            items=cfg.batch_items,
            size=cfg.batch_size,
            clients=cfg.batch_clients,
            tag=f"{self.tag}/batch",
            run=self.run,
            body=self.body,
        )
        if not result["verified"]:
            self.failures.append(f"{label}: {result['statuses']} {result['errors'][:2]}")
        self.progress.done(f"{label}: {result['items_per_s']:,.0f} items/s accepted")
        return result

    # -- publishing ------------------------------------------------------------

    async def warm_up(self) -> None:
        """Open the publishing connections and run the publish path once, unmeasured.

        (The first requests load the publish script into Redis and fill caches;
        they would otherwise show up as the latency scenario's maximum.)
        """
        n = max(self.cfg.publish_clients, self.cfg.posters)
        pub = await self.poster.publish(
            2 * n, tag=f"warmup-{self.run}", conns=n, run=self.run + "w", stamp=False
        )
        self.published_ok("warm-up", pub, 2 * n)

    @property
    def body(self) -> str | None:
        return "x" * self.cfg.body if self.cfg.body else None

    async def publish(self, count: int, conns: int, what: str) -> Published:
        return await self.poster.publish(
            count, tag=f"{self.tag}/{what}", conns=conns, run=self.run, body=self.body
        )

    def published_ok(self, label: str, pub: Published, count: int) -> bool:
        if len(pub.ids) == count and set(pub.statuses) <= {201}:
            return True
        self.failures.append(f"{label}: publishing failed: {pub.statuses} {pub.errors[:2]}")
        return False


def _per_item(got: dict[str, Any]) -> tuple[list[float], list[float]]:
    """Per item: the earliest latency over the sampled connections, and max - min (ms)."""
    seen: dict[str, list[int]] = {}
    for ids, lats in zip(got["sampled_ids"], got["latency_us"], strict=False):
        for item_id, us in zip(ids, lats, strict=False):
            seen.setdefault(item_id, []).append(us)
    first = [min(v) / 1000 for v in seen.values()]
    spread = [(max(v) - min(v)) / 1000 for v in seen.values()]
    return first, spread
