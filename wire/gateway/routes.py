"""The gateway on an aiohttp app: its two endpoints, its reader, its shutdown."""

from __future__ import annotations

from aiohttp import web

from wire.core.closecodes import CloseCode
from wire.gateway.reader import HUB, reader_ctx
from wire.gateway.sse import sse_handler
from wire.gateway.ws import ws_handler


def setup_gateway(app: web.Application) -> None:
    """Add the gateway's routes and its reader to ``app``."""
    app.router.add_get("/v1/ws", ws_handler)
    app.router.add_get("/v1/sse", sse_handler)
    app.cleanup_ctx.append(reader_ctx)
    app.on_shutdown.append(_close_all)


async def _close_all(app: web.Application) -> None:
    """On shutdown, tell every client to go elsewhere (1001) before handlers stop."""
    hub = app[HUB]
    for conn in list(hub.conns):
        hub.close(conn, CloseCode.GOING_AWAY, "server shutting down")
