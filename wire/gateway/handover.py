"""The one place a subscriber's socket is handed to the hub.

The hub writes prebuilt frames (WebSocket) and chunks (SSE) to the asyncio
transport itself, behind aiohttp's back: that is what makes a frame built
once per process go to every connection with one write each. It is safe only
while aiohttp writes nothing of its own to that socket. For WebSocket:

- no compression: permessage-deflate keeps a context across frames, which
  frames written around it would corrupt;
- no autoping and no heartbeat: aiohttp would write pongs and pings itself
  (the hub answers pings and runs keep-alives from one task instead);
- no ``send_*``: a :class:`HubResponse` refuses them, so a slip fails loudly
  rather than racing the hub's writes and skipping its cap. (The close
  handshake aiohttp answers for the client goes through its writer, not
  ``send_*``, and comes after the hub stopped writing.)

For SSE the response must be chunked (each write is one ``http_chunk``) and
uncompressed. :func:`websocket` and :func:`sse` check these rules on the
prepared response and are the only code that builds a hub ``Conn`` from a
transport; any other way to a raw transport is a bug.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from aiohttp import web

from wire.core.entitlements import Grant
from wire.core.errors import WireError
from wire.gateway.conn import Conn
from wire.gateway.wsedge import GuardedResponse


class UnsafeHandover(WireError):
    """A response whose socket the hub must not write to, or a write aiohttp must not make."""


class HubResponse(GuardedResponse):
    """A WebSocket response whose frames only the hub writes: every ``send_*`` raises."""

    async def send_frame(self, *args: Any, **kwargs: Any) -> None:
        raise UnsafeHandover("the hub writes this connection's frames: use Hub.send")

    send_str = send_bytes = send_json = send_json_bytes = ping = pong = send_frame


def websocket(
    request: web.Request,
    ws: web.WebSocketResponse,
    grant: Grant,
    send_buffer: int,
    *,
    batch: bool = False,
) -> Conn:
    """The hub's connection for a prepared WebSocket response that follows the rules.

    ``batch``: the client asked for batched frames (``?batch=1``).
    """
    if not isinstance(ws, HubResponse):
        raise UnsafeHandover("only a HubResponse refuses send_* on a socket the hub writes")
    if ws.compress:
        raise UnsafeHandover("compression is on: raw frames would corrupt its context")
    # aiohttp (3.14) has no public accessor for these two.
    if ws._autoping or ws._heartbeat is not None:
        raise UnsafeHandover("autoping or heartbeat is on: aiohttp would write frames itself")
    conn = Conn(_transport(request, ws, send_buffer), grant=grant, batch=batch)
    _release_http_parser(request)
    return conn


def sse(request: web.Request, resp: web.StreamResponse, grant: Grant, send_buffer: int) -> Conn:
    """The hub's connection for a prepared, chunked, uncompressed event stream."""
    if resp.compression or not resp.chunked:
        raise UnsafeHandover("an event stream the hub writes must be chunked and uncompressed")
    return Conn(_transport(request, resp, send_buffer), sse=True, grant=grant)


def _transport(
    request: web.Request, resp: web.StreamResponse, send_buffer: int
) -> asyncio.Transport:
    """The prepared response's transport, its kernel send buffer capped.

    Linux autotunes the send buffer up to several MiB, where data can
    neither be reprioritized (urgent items) nor counted against the
    slow-consumer cap; a modest fixed size keeps the backlog in the hub,
    where both happen.
    """
    transport = request.transport
    if not resp.prepared or transport is None:
        raise UnsafeHandover("prepare() the response first; its transport must be open")
    sock = transport.get_extra_info("socket")
    if send_buffer > 0 and sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
    return transport


def _release_http_parser(request: web.Request) -> None:
    """Drop the HTTP parser and its message queue from an upgraded connection.

    Once upgraded, aiohttp feeds every byte to the WebSocket parser and
    never to the HTTP one again; the handler ends the connection rather than
    parse another request on it (a WebSocket response is never keep-alive).
    aiohttp itself drops both in ``connection_lost``; here they go at the
    hand-over (about 1.5 KiB per connection: the parser, and an empty
    ``deque`` that allocates a 64-slot block).
    """
    handler = request.protocol
    assert handler._upgraded and handler._payload_parser is not None, "upgrade first"
    handler._parser = None
    handler._messages = _NO_MESSAGES


#: An upgraded connection's request queue: empty, and anything added fails loudly.
_NO_MESSAGES: Any = ()
