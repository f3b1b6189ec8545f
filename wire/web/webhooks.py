"""The admin API of webhooks, and the deliverer inside a publisher process.

Admins (``WIRE_ADMIN_TOKENS``) manage partners' delivery; an editor token is
not an admin token unless listed in both. Delivery itself is
:mod:`wire.delivery`; this module is its HTTP edge and its app lifetime.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable
from functools import partial
from typing import Any

from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from publisher.access import require_admin
from publisher.items import read_json
from wire.core.errors import NotFound, TooManyWebhooks, ValidationError, quoted
from wire.core.ids import format_id, parse_cursor
from wire.core.language import normalize_language
from wire.core.protocol import check_tag_count
from wire.core.tags import normalize_tags
from wire.delivery import signing
from wire.delivery.deliverer import Deliverer, webhook_grant
from wire.delivery.registry import DAMAGED, Registry, Webhook
from wire.delivery.urls import check_host, check_url
from wire.runtime.supervisor import SUPERVISOR
from wire.storage.store import Filter, Store, connect
from wire.web.appkeys import ARRIVALS, ENTITLEMENTS, REDIS, RIGHT_OF_WAY, SETTINGS, STORE, TALLY
from wire.web.http import json_response
from wire.web.metrics import METRICS

MAX_DESCRIPTION = 500
#: Most matching entries ``GET /v1/webhooks/<id>`` counts as its ``lag``...
LAG_LIMIT = 1_000
#: ...and most stream entries it reads to count them.
LAG_SCAN = 10 * LAG_LIMIT
DELIVERER = web.AppKey("deliverer", Deliverer)


def setup_webhooks(app: web.Application, *, follow: bool = False) -> None:
    """Add the admin webhook routes and (unless turned off) the deliverer task.

    ``follow``: the app has a gateway, whose reader's arrivals tell the
    deliverer the stream grew (see :meth:`Deliverer._follow`).
    """
    app.router.add_post("/v1/webhooks", create_webhook)
    app.router.add_get("/v1/webhooks", list_webhooks)
    app.router.add_get("/v1/webhooks/{id}", get_webhook)
    app.router.add_delete("/v1/webhooks/{id}", delete_webhook)
    for op in ("pause", "resume", "rotate-secret"):
        app.router.add_post("/v1/webhooks/{id}/" + op, control_webhook)
    if app[SETTINGS].deliver_webhooks:
        app.cleanup_ctx.append(partial(_deliverer_ctx, follow=follow))


def _registry(request: web.Request) -> Registry:
    return Registry(request.app[REDIS])


def _strings(data: dict[str, Any], name: str) -> list[object]:
    value = data.get(name)
    if not isinstance(value, list):
        raise ValidationError(f"{name} must be a list of strings", field=name)
    return value


async def _fields(request: web.Request, data: dict[str, Any]) -> dict[str, str]:
    """The new webhook's hash fields, every one checked."""
    settings = request.app[SETTINGS]
    url = check_url(data.get("url"), settings.webhook_allow_private)
    await check_host(url, settings.webhook_allow_private)
    tags = normalize_tags(_strings(data, "tags"), allow_wildcard=True)
    if not tags:
        raise ValidationError('tags must name at least one tag (or "*")', field="tags")
    # As on a WebSocket or SSE subscription: a webhook's filter is bounded too.
    check_tag_count(tags, settings.max_tags, "webhook")
    raw_languages = _strings(data, "languages") if data.get("languages") is not None else []
    if len(raw_languages) > settings.max_tags:
        raise ValidationError(
            f"at most {settings.max_tags} languages per webhook", field="languages"
        )
    languages = [normalize_language(v, "languages") for v in raw_languages]
    description = data.get("description") or ""
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
        raise ValidationError(
            f"description must be text up to {MAX_DESCRIPTION}", field="description"
        )
    # Only a missing, null or empty partner means none: false, 0 or [] is a
    # mistake, not a webhook that may receive everything.
    partner = data.get("partner")
    if partner is None or partner == "":
        partner = ""
    else:
        grant = request.app[ENTITLEMENTS].by_name(partner) if isinstance(partner, str) else None
        if grant is None:
            raise ValidationError("partner must name an entitlements entry", field="partner")
        grant.narrow(frozenset(tags))  # Forbidden (403) for tags outside the grant
    store = request.app[STORE]
    since = data.get("since")
    if since is not None and not isinstance(since, str):
        raise ValidationError("since must be a stream id", field="since")
    cursor = await store.last_key()
    if since is not None:
        # As on the sockets: a since at or beyond the newest entry replays
        # nothing and what is published next follows (never skipped until
        # the clock passes a mistyped id or another wire's).
        cursor = min(cursor, parse_cursor(since, field="since"))
    return {
        "url": url,
        "tags": " ".join(tags),
        "languages": " ".join(languages),
        "description": description,
        "partner": partner,
        "status": "active",
        "cursor": format_id(cursor),
        "delivered": "0",
        "created": f"{time.time():.3f}",
    }


async def create_webhook(request: web.Request) -> web.Response:
    """201 and the webhook, with its secret (shown only here and on rotation)."""
    require_admin(request)
    data = await read_json(request)
    if not isinstance(data, dict):
        raise ValidationError('the request body must be a JSON object like {"url": ...}')
    fields = await _fields(request, data)
    fields["secret"] = signing.new_secret()
    registry = _registry(request)
    most = request.app[SETTINGS].max_webhooks
    created = await registry.create(fields, most)
    if created is None:
        raise TooManyWebhooks(f"this wire holds at most {most:,} webhooks; delete one first")
    webhook = await registry.get(created)
    assert webhook is not None
    return json_response({"webhook": {**webhook.public(), "secret": fields["secret"]}}, 201)


async def _found(request: web.Request) -> Webhook:
    webhook = await _registry(request).get(request.match_info["id"])
    if webhook is None:
        raise NotFound(f"no webhook {quoted(request.match_info['id'])}")
    return webhook


async def list_webhooks(request: web.Request) -> web.Response:
    """Every webhook (without secrets)."""
    require_admin(request)
    found = await _registry(request).all()
    return json_response({"webhooks": [w.public() for w in found]})


async def get_webhook(request: web.Request) -> web.Response:
    """One webhook with its ``lag``: matching entries after its cursor (see :func:`_lag`)."""
    require_admin(request)
    webhook = await _found(request)
    return json_response({"webhook": {**webhook.public(), **await _lag(request, webhook)}})


async def _lag(request: web.Request, webhook: Webhook) -> dict[str, Any]:
    """``lag``, counted up to LAG_LIMIT over at most LAG_SCAN stream entries, and
    ``lag_exact``: False when either bound stopped the count (then ``lag`` is a
    lower bound) or the partner's grant is gone (``lag`` None)."""
    store: Store = request.app[STORE]
    grant = webhook_grant(webhook, request.app[ENTITLEMENTS])
    # A damaged webhook has no filter or cursor to count by.
    if grant is None or webhook.status == DAMAGED:
        return {"lag": None, "lag_exact": False}
    wanted = Filter(grant.narrow(frozenset(webhook.tags)), frozenset(webhook.languages))
    count, exact = 0, False
    async for page, at_end in store.pages_to_end(webhook.cursor, wanted, LAG_SCAN):
        count += len(grant.visible(page))
        exact = at_end and count <= LAG_LIMIT
        if count > LAG_LIMIT:
            break
    return {"lag": min(count, LAG_LIMIT), "lag_exact": exact}


async def delete_webhook(request: web.Request) -> web.Response:
    """Delete a webhook; its deliverer stops at its next lease renewal."""
    require_admin(request)
    webhook_id = request.match_info["id"]
    if not await _registry(request).control(webhook_id, "delete"):
        raise NotFound(f"no webhook {quoted(webhook_id)}")
    return json_response({"deleted": webhook_id})


async def control_webhook(request: web.Request) -> web.Response:
    """pause, resume or rotate-secret; the webhook as it is now (and a new secret)."""
    require_admin(request)
    op = request.path.rsplit("/", 1)[1]
    webhook_id = request.match_info["id"]
    secret = signing.new_secret() if op == "rotate-secret" else ""
    done = await _registry(request).control(webhook_id, "rotate" if secret else op, secret)
    if not done:
        raise NotFound(f"no webhook {quoted(webhook_id)}")
    shown = (await _found(request)).public()
    if secret:
        shown["secret"] = secret
    return json_response({"webhook": shown})


class DeliveryCollector(Collector):
    """Delivery counters and lag by webhook id (ids are random: never a URL)."""

    def __init__(self, deliverer: Deliverer) -> None:
        self.deliverer = deliverer

    def collect(self) -> Iterable[Metric]:
        d = self.deliverer
        sent = CounterMetricFamily(
            "wire_webhook_deliveries", "Webhook deliveries answered 2xx", labels=["webhook"]
        )
        for webhook_id, n in d.delivered.items():
            sent.add_metric([webhook_id], n)
        failed = CounterMetricFamily(
            "wire_webhook_failures", "Webhook attempts that failed", labels=["webhook"]
        )
        for webhook_id, n in d.failures.items():
            failed.add_metric([webhook_id], n)
        lag = GaugeMetricFamily(
            "wire_webhook_lag_seconds",
            "Age of the item a webhook is delivering (0 when caught up)",
            labels=["webhook"],
        )
        for webhook_id, seconds in d.lag.items():
            lag.add_metric([webhook_id], seconds)
        yield from (sent, failed, lag)


def make_deliverer(app: web.Application, *, follow: bool = False) -> tuple[Deliverer, Any]:
    """A deliverer for the app's Redis, with its own client for the blocking read
    (None when it follows: it then reads no stream of its own).

    ``follow``: it yields to the app's gateway and learns of new entries from
    that gateway's stream reader instead of reading the stream itself.
    """
    settings = app[SETTINGS]
    assert settings.redis_url is not None
    watch = None if follow else connect(settings.redis_url, socket_timeout=15.0)
    deliverer = Deliverer(
        app[STORE],
        app[STORE] if watch is None else Store(watch, settings),
        app[ENTITLEMENTS],
        settings,
        app[TALLY],
        app[RIGHT_OF_WAY] if follow else None,
        app[ARRIVALS] if follow else None,
    )
    return deliverer, watch


async def _deliverer_ctx(app: web.Application, *, follow: bool) -> AsyncIterator[None]:
    deliverer, watch = make_deliverer(app, follow=follow)
    app[DELIVERER] = deliverer
    supervisor = app[SUPERVISOR]
    app[METRICS].registry.register(DeliveryCollector(deliverer))
    supervisor.start("webhooks", deliverer.run)
    yield
    await supervisor.stop("webhooks")
    if watch is not None:
        await watch.aclose()
