"""CORS from a real second origin in headless Chromium.

A tiny page is served by a second aiohttp app on another loopback port (so a
different origin); from it the browser reads ``/v1/items``, follows
``/v1/sse`` with ``EventSource`` and publishes with a preflighted ``POST``
carrying ``Authorization`` and ``Idempotency-Key``. The same page loaded as
``localhost`` instead of ``127.0.0.1`` is another, unlisted origin: blocked.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from playwright.async_api import Browser, Page

from tests.conftest import ServerFactory, server_factory
from tests.support import EDITOR_TOKEN, chromium, free_port, item, post
from wire.gateway.reader import HUB

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]

READ_AND_FOLLOW = """async ([base, publish, token]) => {
  const listed = await fetch(base + "/v1/items?tags=world");
  const items = (await listed.json()).items.length;
  const got = new Promise((resolve, reject) => {
    const source = new EventSource(base + "/v1/sse?tags=world");
    source.addEventListener("item", (e) => { source.close(); resolve(JSON.parse(e.data)); });
    source.addEventListener("subscribed", async () => {
      if (!publish) return;
      const r = await fetch(base + "/v1/items", {
        method: "POST",
        headers: {"Content-Type": "application/json", "Authorization": "Bearer " + token,
                  "Idempotency-Key": "cors-1"},
        body: JSON.stringify({title: "From the desk", tags: ["world"]}),
      });
      if (r.status !== 201) reject(new Error("publish " + r.status));
      if (!r.headers.get("X-Request-Id")) reject(new Error("X-Request-Id not exposed"));
    });
    source.onerror = () => reject(new Error("EventSource failed"));
  });
  const item = await got;
  return {status: listed.status, items, title: item.title};
}"""

TRY_WRITE = """async ([base, token]) => {
  try {
    const r = await fetch(base + "/v1/items", {
      method: "POST",
      headers: {"Content-Type": "application/json", "Authorization": "Bearer " + token},
      body: JSON.stringify({title: "Refused", tags: ["world"]}),
    });
    return "status " + r.status;
  } catch (e) { return "blocked"; }
}"""

TRY_READ_ERROR = """async ([base]) => {
  const r = await fetch(base + "/v1/items/1-0");
  return [r.status, (await r.json()).error.code];
}"""


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as launched:
        yield launched


@pytest_asyncio.fixture(loop_scope="module")
async def make_server(redis_url: str) -> AsyncIterator[ServerFactory]:
    async with server_factory(redis_url) as make:
        yield make


@pytest_asyncio.fixture(loop_scope="module")
async def page_port() -> AsyncIterator[int]:
    """A second app on another port: the dashboard's origin."""

    async def blank(request: web.Request) -> web.Response:
        return web.Response(text="<!doctype html><title>desk</title>", content_type="text/html")

    app = web.Application()
    app.router.add_get("/", blank)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield port
    await runner.cleanup()


async def open_page(browser: Browser, url: str) -> Page:
    page = await (await browser.new_context()).new_page()
    await page.goto(url)
    return page


async def test_a_dashboard_on_another_origin_reads_follows_and_publishes(
    browser: Browser, make_server: ServerFactory, page_port: int
) -> None:
    origin = f"http://127.0.0.1:{page_port}"
    wire = await make_server(allowed_origins=(origin,))
    page = await open_page(browser, origin + "/")
    result: Any = await page.evaluate(READ_AND_FOLLOW, [wire.base, True, EDITOR_TOKEN])
    assert result == {"status": 200, "items": 0, "title": "From the desk"}
    assert await page.evaluate(TRY_READ_ERROR, [wire.base]) == [404, "not_found"]
    # The same page as http://localhost:<port> is an origin that is not listed.
    other = await open_page(browser, f"http://localhost:{page_port}/")
    assert await other.evaluate(TRY_WRITE, [wire.base, EDITOR_TOKEN]) == "blocked"
    await page.context.close()
    await other.context.close()


async def test_without_listed_origins_reads_and_sse_are_open_and_writes_are_not(
    browser: Browser, make_server: ServerFactory, page_port: int
) -> None:
    wire = await make_server()
    page = await open_page(browser, f"http://127.0.0.1:{page_port}/")
    # The page only reads and follows; the item is published from outside the browser
    # once the page's EventSource is subscribed.
    read = asyncio.ensure_future(page.evaluate(READ_AND_FOLLOW, [wire.base, False, ""]))
    deadline = time.monotonic() + 20
    while not wire.app[HUB].conns:
        assert time.monotonic() < deadline and not read.done(), "EventSource never connected"
        await asyncio.sleep(0.02)
    async with aiohttp.ClientSession() as http:
        status, _ = await post(http, wire.base, item("Open read", ["world"]))
    assert status == 201
    result: Any = await read
    assert result == {"status": 200, "items": 0, "title": "Open read"}
    assert await page.evaluate(TRY_WRITE, [wire.base, EDITOR_TOKEN]) == "blocked"
    await page.context.close()
