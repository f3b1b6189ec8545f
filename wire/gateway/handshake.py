"""What both endpoints do before a connection exists: admission and the URL's subscribe."""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from wire.core.entitlements import Grant, reader_grant
from wire.core.errors import Forbidden, TooManyConnections, quoted
from wire.core.protocol import Subscribe, parse_subscribe
from wire.core.tokens import bearer
from wire.gateway.reader import HUB
from wire.web.appkeys import ENTITLEMENTS, SETTINGS


def admit(request: web.Request) -> Grant:
    """Token, Origin and connection-limit checks, before any upgrade."""
    settings = request.app[SETTINGS]
    grant = reader_grant(
        bearer(request.headers, request.query),
        settings.subscriber_tokens,
        request.app[ENTITLEMENTS],
        also=settings.editor_tokens,  # whoever may publish may read
    )
    origin = request.headers.get("Origin")
    if settings.allowed_origins and origin is not None and origin not in settings.allowed_origins:
        raise Forbidden(f"origin {quoted(origin)} is not allowed")
    if len(request.app[HUB].conns) >= settings.max_connections:
        raise TooManyConnections("this gateway is at its connection limit; try another or retry")
    return grant


def _query_int(raw: str) -> int | str:
    """A query value as an int when it is a short ASCII number, else as given.

    The validator then answers anything else; ``str.isdigit`` would let "²"
    or thousands of digits through to ``int()``, which raises.
    """
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 9 else raw


def subscribe_from(query: Mapping[str, str], tags: str, since: str | None) -> Subscribe:
    """The subscribe a query string asks for (WebSocket shortcut and SSE alike).

    ``lang=en,ru`` is the subscribe's ``languages`` (an empty ``lang=``: every language).
    """
    msg: dict[str, object] = {"tags": [t for t in tags.split(",") if t.strip()]}
    if "lang" in query:
        msg["languages"] = [lang for lang in query["lang"].split(",") if lang.strip()]
    if since:
        msg["since"] = since
    if "backfill" in query:
        msg["backfill"] = _query_int(query["backfill"])
    if "compact" in query:
        msg["compact"] = query["compact"] in ("1", "true")
    return parse_subscribe(msg)
