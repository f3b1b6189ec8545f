"""Who may do what at the publisher: editors write, readers read (maybe within a grant),
admins manage partners' delivery and read the ledger."""

from __future__ import annotations

from aiohttp import web

from wire.core.entitlements import Grant, reader_grant
from wire.core.tokens import bearer, require
from wire.web.appkeys import ENTITLEMENTS, SETTINGS


def require_editor(request: web.Request) -> None:
    """Raise Unauthorized unless the request carries an editor token."""
    require(bearer(request.headers), request.app[SETTINGS].editor_tokens, what="editor")


def require_admin(request: web.Request) -> None:
    """Raise Unauthorized unless the request carries an admin token (``WIRE_ADMIN_TOKENS``)."""
    require(bearer(request.headers), request.app[SETTINGS].admin_tokens, what="admin")


def require_reader(request: web.Request) -> Grant:
    """What the caller may read: public unless subscriber tokens or entitlements exist."""
    settings = request.app[SETTINGS]
    return reader_grant(
        bearer(request.headers, request.query),
        settings.subscriber_tokens,
        request.app[ENTITLEMENTS],
        also=settings.editor_tokens,
    )
