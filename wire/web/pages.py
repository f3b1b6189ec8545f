"""The pages a person opens: the live news desk at ``/`` and the editor at ``/editor``.

Both are plain HTML, CSS and JavaScript files in ``wire/static`` (no build
step). They are served with ``Cache-Control: no-cache`` so a browser
revalidates them (cheaply, by ETag) and never runs yesterday's script against
today's server, and with a Content-Security-Policy that allows scripts and
styles from this origin only: even if a headline carrying markup ever reached
the DOM as HTML, no inline script or event handler in it could run.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from wire.core.errors import NotFound

STATIC = Path(__file__).parent / "static"

#: ``'self'`` in connect-src also covers ``ws:``/``wss:`` to this host (CSP
#: Level 3), which is all the desk needs for ``/v1/ws``. Pictures that go with
#: stories live wherever the newsroom keeps them, so images (and images only)
#: may come from any http(s) origin; an image cannot run script.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: http: https:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)

HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}

#: Explicit types (and charsets) rather than the platform's mimetypes table.
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _file(path: Path) -> web.FileResponse:
    headers = dict(HEADERS)
    headers["Content-Type"] = TYPES.get(path.suffix, "application/octet-stream")
    return web.FileResponse(path, headers=headers)


def setup_pages(app: web.Application, static: Path = STATIC) -> None:
    """Add ``/`` (news desk), ``/editor`` (editor console), ``/static/<file>``
    and ``/static/pictures/<file>`` (the placeholder pictures ``wire demo`` uses)."""
    app.router.add_get("/", _page(static / "index.html"))
    app.router.add_get("/editor", _page(static / "editor.html"))
    app.router.add_get("/static/{name}", _folder(static))
    app.router.add_get("/static/pictures/{name}", _folder(static / "pictures"))


def _folder(folder: Path) -> Handler:
    """Serve the files of one folder (not its subfolders) by name."""
    # The asset set is fixed when the app is built: a lookup in this dict is
    # the whole path check, so no request path can reach outside the folder.
    assets = {p.name: p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")}

    async def asset(request: web.Request) -> web.StreamResponse:
        path = assets.get(request.match_info["name"])
        if path is None:
            raise NotFound(f"no route for {request.path}")
        return _file(path)

    return asset


def _page(path: Path) -> Handler:
    async def page(request: web.Request) -> web.StreamResponse:
        return _file(path)

    page.__doc__ = f"Serve {path.name}."
    return page
