"""The aiohttp application factory and server runner."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp import web

from publisher import MAX_BODY, setup_publisher
from wire.core.entitlements import Entitlements, load
from wire.core.ledger import Tally
from wire.gateway.reader import HUB, READER
from wire.gateway.routes import setup_gateway
from wire.runtime.arrivals import Arrivals
from wire.runtime.rightofway import RightOfWay
from wire.runtime.settings import Settings
from wire.runtime.supervisor import SUPERVISOR, Supervisor
from wire.storage.ledger import FLUSH_ERRORS, Ledger
from wire.storage.store import Store, connect
from wire.web.appkeys import (
    ARRIVALS,
    ENTITLEMENTS,
    LEDGER,
    REDIS,
    RIGHT_OF_WAY,
    SETTINGS,
    STORE,
    TALLY,
)
from wire.web.cors import add_cors_headers, preflight
from wire.web.http import (
    close_unread_body,
    defer_continue_everywhere,
    json_response,
    redis_unavailable,
    request_log,
)
from wire.web.listen import AcceptErrors, ConnectionCap, http_connection_limit, refusal
from wire.web.metrics import setup_metrics
from wire.web.pages import setup_pages
from wire.web.parser_errors import JSONErrorsProtocol
from wire.web.webhooks import setup_webhooks

log = logging.getLogger("wire")
STATIC = Path(__file__).parent / "static"


def create_app(
    settings: Settings, *, publisher: bool = True, gateway: bool = True
) -> web.Application:
    """Build the app: the publisher API, the gateway, or both on one port."""
    if settings.redis_url is None:
        raise ValueError("settings.redis_url must be set (the CLI starts Redis when it is not)")
    app = web.Application(
        middlewares=[close_unread_body, request_log, preflight],
        client_max_size=MAX_BODY,
    )
    app.on_response_prepare.append(add_cors_headers)
    app[SETTINGS] = settings
    app[ENTITLEMENTS] = load(settings.entitlements) if settings.entitlements else Entitlements()
    app[SUPERVISOR] = Supervisor()
    app[TALLY] = Tally(settings.ledger_pending)
    app[RIGHT_OF_WAY] = RightOfWay()
    app.cleanup_ctx.append(_redis_ctx)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    if gateway:
        # The gateway's stream reader announces what it writes: to long polls
        # and to the webhook deliverer, which then needs no reader of its own.
        app[ARRIVALS] = Arrivals(settings.max_waiters)
    if publisher:
        # Without a gateway's stream reader, long polls need a watcher of their own.
        setup_publisher(app, watch=not gateway)
        setup_webhooks(app, follow=gateway)
    if gateway:
        setup_gateway(app)
        setup_pages(app)
    setup_metrics(app)
    defer_continue_everywhere(app)
    return app


async def _redis_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    assert settings.redis_url is not None
    redis = connect(settings.redis_url)
    app[REDIS] = redis
    app[STORE] = Store(redis, settings)
    ledger = app[LEDGER] = Ledger(redis, settings, app[TALLY])
    app[SUPERVISOR].start("ledger", ledger.run)
    yield
    await app[SUPERVISOR].stop("ledger")
    # What this process recorded last goes out before it ends (if Redis answers).
    with contextlib.suppress(*FLUSH_ERRORS):
        async with asyncio.timeout(2):
            await ledger.flush()
    await redis.aclose()


async def healthz(request: web.Request) -> web.Response:
    """The process is up and serving HTTP."""
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Redis answers, every background task runs (``task:<name>``: the embargo
    releaser, the gateway's stream reader and keep-alives, the ledger's flusher) and, on a gateway,
    the stream reader is reading. ``pid`` tells the workers of one port apart."""
    checks: dict[str, bool] = {}
    try:
        checks["redis"] = await request.app[STORE].ping()
    except Exception as err:  # unreachable, or up and refusing (BUSY)
        if not redis_unavailable(err):
            raise
        checks["redis"] = False
    reader = request.app.get(READER)
    if reader is not None:
        checks["reader"] = reader.ready
    for name, running in request.app[SUPERVISOR].status().items():
        checks["task:" + name] = running
    ok = all(checks.values())
    return json_response(
        {"status": "ready" if ok else "unavailable", "checks": checks, "pid": os.getpid()},
        200 if ok else 503,
    )


async def serve(
    app: web.Application,
    settings: Settings,
    *,
    reuse_port: bool = False,
    ready: asyncio.Event | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Run ``app`` until SIGINT/SIGTERM (or ``stop`` is set), then shut down gracefully."""
    # Each connection's protocol (made below, not by aiohttp) takes these too.
    handler_args: dict[str, Any] = {
        "access_log": None,
        # aiohttp's default (3630 s) lets a client that never finishes its
        # headers hold a connection for an hour; streams are not affected.
        "keepalive_timeout": settings.idle_timeout,
    }
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=5.0, **handler_args)
    await runner.setup()
    loop = asyncio.get_running_loop()
    # Accept errors (out of descriptors) are logged once per interval, not
    # once per waiting connection.
    loop.set_exception_handler(AcceptErrors())
    hub = app.get(HUB)
    assert runner.server is not None
    server = runner.server
    cap = ConnectionCap(
        lambda: JSONErrorsProtocol(
            server, loop=loop, origins=settings.allowed_origins, **handler_args
        ),
        http_connection_limit(settings.max_http_connections),
        streams=(lambda: len(hub.conns)) if hub is not None else (lambda: 0),
        answer=refusal(settings.allowed_origins),
        origins=settings.allowed_origins,
    )
    listener = await loop.create_server(
        cap, settings.host, settings.port, reuse_port=reuse_port, backlog=4096
    )
    log.info("listening on http://%s:%s", settings.host, settings.port)
    stop = stop or asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        listener.close()  # stop accepting; then aiohttp's graceful shutdown
        await runner.cleanup()
