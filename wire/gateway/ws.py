"""``GET /v1/ws``: the WebSocket subscriber protocol.

The handler admits the client, upgrades, hands the socket to the hub
(:mod:`~wire.gateway.handover`) and then only reads: client messages go to the
:class:`~wire.gateway.session.Session`, pings and pongs to the hub.
"""

from __future__ import annotations

from aiohttp import WSMessage, WSMsgType, web

from wire.core import frames
from wire.core.errors import ClientError, InvalidMessage, ValidationError, quoted
from wire.core.protocol import Subscribe, error_message
from wire.gateway import handover, wsedge
from wire.gateway.conn import Conn
from wire.gateway.handshake import admit, subscribe_from
from wire.gateway.hub import Hub
from wire.gateway.session import Session
from wire.web.appkeys import SETTINGS
from wire.web.http import error_response


async def ws_handler(request: web.Request) -> web.StreamResponse:
    """``GET /v1/ws``: the WebSocket subscriber protocol."""
    settings = request.app[SETTINGS]
    if (wrong_version := wsedge.refuse_version(request)) is not None:
        return wrong_version
    try:
        grant = admit(request)
        wsedge.check_handshake(request)
        batch = _query_batch(request)
        initial = _query_subscribe(request)
        if initial is not None:
            grant.check_subscription(initial.tags)
    except ClientError as err:
        return error_response(err.status, err.as_dict())
    # aiohttp refuses a message of max_msg_size bytes or more; the limit is
    # "more than max_frame bytes", so a message of exactly max_frame passes.
    # No per-connection heartbeat: the hub pings every connection from one
    # task (keepalive.run), which saves ~600 bytes per connection; autoping is
    # off so the pongs reach the loop below, which also answers the client's pings.
    ws = handover.HubResponse(autoping=False, max_msg_size=settings.max_frame + 1, compress=False)
    await ws.prepare(request)
    conn = handover.websocket(request, ws, grant, settings.send_buffer, batch=batch)
    session = Session(request, conn, grant)
    ws.bind(session.hub, conn)  # unmasked frames, bad close codes: 1002
    try:
        if initial is not None:
            await session.answer(initial)
        # ``receive()`` itself, not ``async for``: its ``__anext__`` would be one
        # more frame kept for the connection's lifetime (about 250 bytes).
        while (msg := await ws.receive()).type not in _END and not conn.closed:
            if msg.type == WSMsgType.TEXT:
                await session.answer(msg.data)
            elif msg.type == WSMsgType.BINARY:
                session.reply(
                    error_message(
                        InvalidMessage("binary frames are not accepted; send JSON text frames")
                    )
                )
            elif msg.type in (WSMsgType.PING, WSMsgType.PONG):
                _ping_pong(session.hub, conn, msg)
    finally:
        session.end()
    return ws


#: What ``receive()`` returns once the connection is over (``async for`` stops there too).
_END = frozenset((WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED))


def _ping_pong(hub: Hub, conn: Conn, msg: WSMessage) -> None:
    """Answer a client's ping; note a pong to the hub's keep-alive ping."""
    if msg.type == WSMsgType.PING:
        hub.send(conn, frames.ws_pong(msg.data))
    else:
        hub.pong(conn)


def _query_batch(request: web.Request) -> bool:
    """``?batch=1``: items may come several to a frame, one message per line."""
    raw = request.query.get("batch", "0")
    if raw not in ("0", "1", "true", "false"):
        raise ValidationError(f"batch must be 1 or 0, not {quoted(raw)}", field="batch")
    return raw in ("1", "true")


def _query_subscribe(request: web.Request) -> Subscribe | None:
    """``/v1/ws?tags=a,b&lang=en&since=ID`` (or ``backfill=N``) as a subscribe at connect time.

    ``lang`` alone sets the language filter the later subscribe messages keep.
    """
    tags = request.query.get("tags")
    if tags is None and "lang" not in request.query:
        return None
    return subscribe_from(request.query, tags or "", request.query.get("since"))
