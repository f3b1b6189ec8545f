"""The news desk on a wire that requires tokens (issue 11), in headless Chromium.

The browser, profile and server fixtures are those of tests/test_browser.py
(one Chromium per module, every test on the module's loop).
"""

from __future__ import annotations

import aiohttp
import pytest
from playwright.async_api import WebSocket, expect

from tests.conftest import ServerFactory
from tests.support import item, post
from tests.test_browser import LIVE, Browsing, browser, browsing, http, make_server

__all__ = ["browser", "browsing", "http", "make_server"]

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]


async def test_desk_asks_once_for_a_token_and_then_shows_the_news(
    make_server: ServerFactory, browsing: Browsing, http: aiohttp.ClientSession
) -> None:
    server = await make_server(subscriber_tokens=("staff-token",))
    page = await browsing.context.new_page()
    sockets: list[str] = []

    def opened(ws: WebSocket) -> None:
        sockets.append(ws.url)

    page.on("websocket", opened)
    await page.goto(server.base + "/")
    form = page.locator("#token-form")
    await expect(form).to_be_visible(timeout=LIVE)
    await expect(page.locator("#status")).to_have_attribute("data-state", "offline")
    # A wrong token is refused and asked for again, with a word why.
    await page.fill("#token", "not-the-token")
    await page.click("#token-form button[type=submit]")
    await expect(page.locator("#token-error")).to_have_text("That token was not accepted.")
    await expect(form).to_be_visible()
    await page.fill("#token", "staff-token")
    await page.click("#token-form button[type=submit]")
    await expect(page.locator("#status")).to_have_attribute("data-state", "live", timeout=LIVE)
    await expect(form).to_be_hidden()
    # One attempt per token offered: the refusals were not retried in a loop.
    assert len(sockets) == 3 and sockets[2].endswith("/v1/ws?batch=1&token=staff-token")
    assert await page.evaluate("sessionStorage.getItem('wire-desk-token')") == "staff-token"
    status, _ = await post(http, server.base, item("Seen behind a token", ["world"]))
    assert status == 201
    await expect(page.locator("#feed .item .title")).to_have_text(
        ["Seen behind a token"], timeout=LIVE
    )
    # A reload in the same tab keeps the token: no question asked.
    await page.reload()
    await expect(page.locator("#status")).to_have_attribute("data-state", "live", timeout=LIVE)
    await expect(form).to_be_hidden()
    await expect(page.locator("#feed .item .title")).to_have_text(["Seen behind a token"])
