"""Prometheus metrics at ``GET /metrics``.

Counters on the fan-out path are plain integers kept by the hub and read by a
collector at scrape time, so delivering an item costs no metric update per
subscriber; the publish-to-deliver histogram is observed once per item.

No label ever carries a string a client or an editor chose (a tag, a guid, a
token's name, an HTTP method): metrics are read by people and systems outside
any grant, and such labels would also let anyone grow the series without end.
With ``WIRE_METRICS_TOKEN`` set, ``/metrics`` requires it as a Bearer token.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable, Sequence

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from wire.core.entry import Entry
from wire.core.tokens import bearer, require
from wire.gateway.hub import Hub
from wire.gateway.reader import HUB, READER, Reader
from wire.storage.ledger import Ledger
from wire.web import groupmetrics
from wire.web.appkeys import LEDGER, SETTINGS, STORE
from wire.web.http import REDIS_DOWN

#: HTTP methods counted by name; anything else a client sends is "other".
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class Metrics:
    """One registry per app, so several apps in one process never collide."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.published = Counter(
            "wire_items_published",
            "Items accepted by this publisher",
            ["kind"],
            registry=self.registry,
        )
        self.requests = Counter(
            "wire_http_requests",
            "HTTP requests answered",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.redis_errors = Counter(
            "wire_redis_errors",
            "Redis operations that failed (connection or timeout)",
            ["component"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "wire_publish_to_deliver_seconds",
            "From the item's stream id (Redis time at publish) to its fan-out here",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.stream_length = Gauge(
            "wire_stream_length", "Entries kept in the item stream", registry=self.registry
        )
        self.reader_lag = Gauge(
            "wire_reader_lag_seconds",
            "Age gap between the newest stream entry and the last one this gateway fanned out",
            registry=self.registry,
        )

    def observe(self, entries: Sequence[Entry]) -> None:
        """Record publish-to-deliver latency for a dispatched batch."""
        now_ms = time.time() * 1000
        observe = self.latency.observe
        for entry in entries:
            observe(max(0.0, now_ms - entry.key[0]) / 1000)


class HubCollector(Collector):
    """Gateway state read at scrape time."""

    def __init__(self, hub: Hub, reader: Reader) -> None:
        self.hub = hub
        self.reader = reader

    def collect(self) -> Iterable[Metric]:
        hub = self.hub
        yield CounterMetricFamily(
            "wire_deliveries", "Items written to subscribers", value=hub.deliveries
        )
        yield CounterMetricFamily(
            "wire_writes", "Writes of items to subscriber sockets", value=hub.writes
        )
        yield CounterMetricFamily(
            "wire_slow_consumer_closes", "Connections closed with 4008", value=hub.slow_closes
        )
        yield CounterMetricFamily(
            "wire_reader_redis_errors", "Failed stream reads", value=self.reader.errors
        )
        yield CounterMetricFamily(
            "wire_reader_batches", "Batches the stream reader dispatched", value=self.reader.batches
        )
        yield CounterMetricFamily(
            "wire_reader_entries", "Entries in those batches", value=self.reader.entries
        )
        yield GaugeMetricFamily(
            "wire_connections", "Open subscriber connections", value=len(hub.conns)
        )
        yield GaugeMetricFamily(
            "wire_connections_behind",
            "Connections whose items are queued in the hub",
            value=len(hub.behind),
        )
        yield GaugeMetricFamily(
            "wire_subscribed_tags", "Distinct subscribed tags", value=len(hub.index)
        )
        # How concentrated subscriptions are, without naming a tag.
        yield GaugeMetricFamily(
            "wire_tag_subscribers_max",
            "Subscribers of the most subscribed tag",
            value=max(map(len, hub.index.values()), default=0),
        )


METRICS = web.AppKey("metrics", Metrics)
#: This process's place in a ``--workers`` group (absent for a single process).
GROUP = web.AppKey("group_metrics", groupmetrics.Group)
#: Seconds a scrape gives Redis for the stream's length and newest id.
REDIS_READ_TIMEOUT = 1.0


def setup_metrics(app: web.Application) -> None:
    """Create the app's metrics, serve ``/metrics``, count every HTTP answer."""
    app[METRICS] = Metrics()
    app.router.add_get("/metrics", metrics_handler)
    # A signal, not a middleware: it sees the final status as the answer goes
    # out, and keeps no frame alive for a WebSocket's lifetime (a middleware
    # would, about 400 bytes per connection).
    app.on_response_prepare.append(count_response)
    app.cleanup_ctx.append(_attach_gateway)
    app.cleanup_ctx.append(_answer_the_group)


class LedgerCollector(Collector):
    """The delivery ledger's flushes: records written, dropped, waiting."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def collect(self) -> Iterable[Metric]:
        ledger = self.ledger
        yield CounterMetricFamily(
            "wire_ledger_records_written", "Delivery-ledger records flushed to Redis",
            value=ledger.written,
        )
        yield CounterMetricFamily(
            "wire_ledger_dropped_records",
            "Delivery-ledger records dropped unwritten (Redis down past the pending cap)",
            value=ledger.dropped,
        )
        yield GaugeMetricFamily(
            "wire_ledger_pending",
            "Delivery-ledger tuples and aggregated records waiting for the next flush",
            value=len(ledger.tally.pending) + len(ledger.unsent),
        )


async def _attach_gateway(app: web.Application) -> AsyncIterator[None]:
    # Runs after the gateway's reader context, so the hub and reader exist.
    # (And after the Redis context, so the ledger exists too.)
    app[METRICS].registry.register(LedgerCollector(app[LEDGER]))
    reader = app.get(READER)
    if reader is not None:
        metrics = app[METRICS]
        metrics.registry.register(HubCollector(app[HUB], reader))
        reader.observe = metrics.observe
    yield


async def count_response(request: web.Request, response: web.StreamResponse) -> None:
    """Count answers by route (the pattern, never the raw path: ids would explode it)."""
    route = request.match_info.route.resource
    name = route.canonical if route is not None else "unmatched"
    method = request.method if request.method in METHODS else "other"
    request.app[METRICS].requests.labels(method, name, str(response.status)).inc()


async def metrics_handler(request: web.Request) -> web.Response:
    """Prometheus text exposition, with stream length and reader lag read now;
    in a group of processes, every process's (see :mod:`wire.web.groupmetrics`)."""
    token = request.app[SETTINGS].metrics_token
    if token:
        require(bearer(request.headers), (token,), what="metrics")
    group = request.app.get(GROUP)
    body = await group.everyone() if group is not None else await exposition(request.app)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def exposition(app: web.Application) -> bytes:
    """This process's metrics as Prometheus text, stream length and reader lag read now.

    Redis gets :data:`REDIS_READ_TIMEOUT` to answer: a scrape of a group
    waits :data:`~wire.web.groupmetrics.ASK_TIMEOUT` for each process, and a
    hung Redis must not make them all miss it (the gauges then keep their
    last values, and the miss is counted).
    """
    metrics = app[METRICS]
    try:
        async with asyncio.timeout(REDIS_READ_TIMEOUT):
            metrics.stream_length.set(await app[STORE].length())
            newest = await app[STORE].last_key()
    except (*REDIS_DOWN, TimeoutError):
        metrics.redis_errors.labels("metrics").inc()
    else:
        hub = app.get(HUB)
        if hub is not None:
            metrics.reader_lag.set(max(0, newest[0] - hub.position[0]) / 1000)
    return generate_latest(metrics.registry)


async def _answer_the_group(app: web.Application) -> AsyncIterator[None]:
    """In a group of processes, answer the others' scrapes on this one's socket."""
    settings = app[SETTINGS]
    if not settings.worker_dir:
        yield
        return
    group = groupmetrics.Group(settings.worker_dir, settings.worker_slot, lambda: exposition(app))
    app[GROUP] = group
    async with group.answering():
        yield
