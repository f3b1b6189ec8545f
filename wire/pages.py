"""The pages a person opens: the live news desk at ``/`` and the editor at ``/editor``."""

from __future__ import annotations

from aiohttp import web


def setup_pages(app: web.Application) -> None:
    """Add the page routes (filled in by the Clients issue)."""
