"""The news desk (``/``) and the editor console (``/editor``) in headless Chromium.

One Chromium serves the whole module. Playwright's async objects belong to the
event loop that created them, so every test here runs on the module's loop,
and this module overrides ``make_server`` and ``http`` from conftest to start
servers on that loop too (same behaviour, different loop scope).

Waits are Playwright's: ``expect`` polls until the page shows what a person
would see, or fails after a bounded timeout. "Within a second" from the issue
is the 1000 ms timeout after the editor has confirmed the publish.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import orjson
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Dialog,
    Locator,
    Page,
    expect,
)
from redis.typing import EncodableT, FieldT

from tests.conftest import Server, ServerFactory, server_factory
from tests.support import EDITOR_TOKEN, chromium, get_json, item, post
from wire.storage import keys

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOT = ROOT / "docs" / "newsdesk.png"
#: The connection state shown on the desk once its subscription is confirmed.
LIVE = 5000

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]


# ---- fixtures on the module's loop ---------------------------------------------


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as launched:
        yield launched


@pytest_asyncio.fixture(loop_scope="module")
async def make_server(redis_url: str) -> AsyncIterator[ServerFactory]:
    """conftest's ``make_server``, on this module's loop."""
    async with server_factory(redis_url) as make:
        yield make


@pytest_asyncio.fixture(loop_scope="module")
async def server(make_server: ServerFactory) -> Server:
    return await make_server()


@pytest_asyncio.fixture(loop_scope="module")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@dataclass
class Browsing:
    """One browser profile for a test, and what its pages did wrong.

    Uncaught script errors, dialogs (``alert``) and Content-Security-Policy
    violations fail the test; refused connections while a server is down are
    expected and ignored.
    """

    context: BrowserContext
    problems: list[str] = field(default_factory=list)

    def watch(self, page: Page) -> None:
        page.on("pageerror", lambda err: self.problems.append(f"uncaught: {err}"))
        page.on("dialog", self._dialog)
        page.on("console", self._console)

    async def _dialog(self, dialog: Dialog) -> None:
        self.problems.append(f"dialog: {dialog.message}")
        await dialog.dismiss()

    def _console(self, msg: ConsoleMessage) -> None:
        if msg.type == "error" and "Content Security Policy" in msg.text:
            self.problems.append(f"csp: {msg.text}")

    async def desk(self, server: Server, query: str = "") -> Page:
        """Open the news desk and wait until it shows that it is live."""
        return await self.desk_at(server.base + "/" + query)

    async def desk_at(self, url: str) -> Page:
        page = await self.context.new_page()
        await page.goto(url)
        await expect(page.locator("#status")).to_have_attribute("data-state", "live", timeout=LIVE)
        return page

    async def editor(self, server: Server) -> Page:
        """Open the editor console with the editor token typed in."""
        page = await self.context.new_page()
        await page.goto(server.base + "/editor")
        await page.fill("#token", EDITOR_TOKEN)
        return page


@pytest_asyncio.fixture(loop_scope="module")
async def browsing(browser: Browser) -> AsyncIterator[Browsing]:
    """A fresh profile per test, in en-GB and India's time zone (UTC+05:30)."""
    context = await browser.new_context(
        locale="en-GB", timezone_id="Asia/Kolkata", viewport={"width": 1100, "height": 900}
    )
    browsing = Browsing(context)
    context.on("page", browsing.watch)
    yield browsing
    await context.close()
    assert browsing.problems == []


def titles(page: Page) -> Locator:
    """Every headline on the desk, top to bottom."""
    return page.locator("#feed .item .title")


def story(page: Page, title: str) -> Locator:
    """The desk row whose headline is exactly ``title``."""
    return page.locator("#feed .item").filter(has=page.get_by_text(title, exact=True))


async def publish_in_editor(editor: Page, title: str, tags: str, **fields: str) -> None:
    """Fill the editor form, submit it, and wait for the editor to confirm."""
    await editor.fill("#title", title)
    await editor.fill("#tags", tags)
    for name, value in fields.items():
        if name == "urgency":
            await editor.select_option("#urgency", value)
        else:
            await editor.fill(f"#{name}", value)
    await editor.click("#submit")
    await expect(editor.locator("#form-status")).to_contain_text("Published", timeout=5000)


# ---- the tests ------------------------------------------------------------------


async def test_pages_are_served_with_a_strict_policy(
    server: Server, http: aiohttp.ClientSession
) -> None:
    for path in ("/", "/editor", "/static/desk.js", "/static/editor.js", "/static/wire.css"):
        async with http.get(server.base + path) as resp:
            assert resp.status == 200, path
            assert resp.headers["Cache-Control"] == "no-cache"
            assert resp.headers["Content-Type"].endswith("; charset=utf-8")
            csp = resp.headers["Content-Security-Policy"]
            assert "script-src 'self'" in csp
            assert "unsafe-inline" not in csp
    for path in ("/static/nope.js", "/static/..%2Fpages.py", "/static/../pages.py"):
        async with http.get(server.base + path) as resp:
            assert resp.status == 404, path


async def test_editor_item_reaches_matching_desk_within_a_second_and_not_others(
    browsing: Browsing, server: Server
) -> None:
    world = await browsing.desk(server, "?tags=world")
    sport = await browsing.desk(server, "?tags=sport")
    editor = await browsing.editor(server)

    async with editor.expect_request(lambda r: r.method == "POST") as request:
        await publish_in_editor(editor, "Earthquake strikes off Japan coast", "world/asia")
    assert re.fullmatch(r"[0-9a-f]{32}", (await request.value).headers["idempotency-key"])
    await expect(story(world, "Earthquake strikes off Japan coast")).to_be_visible(timeout=1000)

    # An item both pages match: once the sport page shows it, the earlier
    # world-only item would have reached it before, had it been sent at all.
    await publish_in_editor(editor, "Olympic venue damaged", "world, sport")
    await expect(story(world, "Olympic venue damaged")).to_be_visible(timeout=1000)
    await expect(story(sport, "Olympic venue damaged")).to_be_visible(timeout=1000)
    await expect(titles(sport)).to_have_text(["Olympic venue damaged"])
    await expect(titles(world)).to_have_text(
        ["Olympic venue damaged", "Earthquake strikes off Japan coast"]
    )

    # The editor lists what it published, newest first, and so does a reload.
    recent = editor.locator("#recent .title")
    await expect(recent).to_have_text(
        ["Olympic venue damaged", "Earthquake strikes off Japan coast"]
    )
    await editor.reload()
    await expect(recent).to_have_text(
        ["Olympic venue damaged", "Earthquake strikes off Japan coast"]
    )
    await expect(editor.locator("#token")).to_have_value(EDITOR_TOKEN)  # kept in localStorage


async def test_desk_reconnects_after_a_restart_and_shows_every_item_once(
    browsing: Browsing, make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    gateway = await make_server()
    publisher = await make_server(gateway=False)  # stays up while the gateway restarts
    desk = await browsing.desk(gateway, "?tags=world")
    status = desk.locator("#status")
    for title in ("Before 1", "Before 2"):
        assert (await post(http, publisher.base, item(title, ["world"])))[0] == 201
    await expect(titles(desk)).to_have_text(["Before 2", "Before 1"], timeout=5000)

    await gateway.stop()
    await expect(status).to_have_attribute("data-state", "reconnecting", timeout=5000)
    await expect(status).to_contain_text("Reconnecting")
    # More than the desk's backfill (100), so only a resume from the last id
    # seen can bring them all; every seventh is for another desk.
    during = []
    for n in range(1, 121):
        tags = ["sport"] if n % 7 == 0 else [("world", "world/europe", "world/africa")[n % 3]]
        assert (await post(http, publisher.base, item(f"During {n}", tags)))[0] == 201
        if tags != ["sport"]:
            during.append(f"During {n}")

    await make_server(port=gateway.settings.port)
    await expect(status).to_have_attribute("data-state", "live", timeout=20_000)
    assert (await post(http, publisher.base, item("After 1", ["world"])))[0] == 201
    # Every matching item exactly once, newest first: none lost, none doubled.
    await expect(titles(desk)).to_have_text(
        ["After 1", *reversed(during), "Before 2", "Before 1"], timeout=5000
    )


async def test_markup_in_a_title_shows_as_text_and_runs_nothing(
    browsing: Browsing, server: Server
) -> None:
    evil = "<script>alert(1)</script><img src=x onerror=\"document.title='pwned'\"> Talks"
    subtitle = "<b>bold</b> & <i>claims</i>"
    desk = await browsing.desk(server)
    editor = await browsing.editor(server)
    await publish_in_editor(editor, evil, "world", subtitle=subtitle, mark="<em>Exclusive</em>")

    row = desk.locator("#feed .item").first
    await expect(row.locator(".title")).to_have_text(evil, timeout=1000)
    await expect(row.locator(".subtitle")).to_have_text(subtitle)
    await expect(row.locator(".mark")).to_have_text("<em>Exclusive</em>")
    for page in (desk, editor):
        assert await page.locator("main img, main script, main b, main i, main em").count() == 0
        assert await page.title() != "pwned"
    await expect(editor.locator("#recent .title")).to_have_text([evil])


async def test_the_filter_lives_in_the_url(
    browsing: Browsing, server: Server, http: aiohttp.ClientSession
) -> None:
    for title, tags in [
        ("Summit opens in Brussels", ["world/europe"]),
        ("Cup final goes to penalties", ["sport/football"]),
        ("Markets rally on rate hopes", ["business"]),
        ("Election called", ["politics", "world"]),
    ]:
        assert (await post(http, server.base, item(title, tags)))[0] == 201

    desk = await browsing.desk(server, "?tags=world,business")
    view = ["Election called", "Markets rally on rate hopes", "Summit opens in Brussels"]
    await expect(titles(desk)).to_have_text(view)
    await expect(desk.locator("#filter")).to_have_value("world, business")

    # Typing a filter changes the view live and the URL with it.
    await desk.fill("#filter", "Sport")
    await desk.press("#filter", "Enter")
    await expect(desk).to_have_url(server.base + "/?tags=sport")
    await expect(titles(desk)).to_have_text(["Cup final goes to penalties"])
    assert (await post(http, server.base, item("Late winner", ["sport"])))[0] == 201
    await expect(titles(desk)).to_have_text(["Late winner", "Cup final goes to penalties"])

    # The link reproduces the view elsewhere; Back restores the previous one.
    other = await browsing.desk_at(desk.url)
    await expect(titles(other)).to_have_text(["Late winner", "Cup final goes to penalties"])
    await desk.go_back()
    await expect(titles(desk)).to_have_text(view)
    await expect(desk.locator("#filter")).to_have_value("world, business")


async def test_clicking_a_chip_filters_by_that_tag(
    browsing: Browsing, server: Server, http: aiohttp.ClientSession
) -> None:
    for title, tags in [
        ("Ceasefire talks resume", ["world"]),
        ("Striker signs record deal", ["sport/football"]),
        ("Club shares jump", ["sport", "business"]),
    ]:
        assert (await post(http, server.base, item(title, tags)))[0] == 201
    desk = await browsing.desk(server)
    await expect(titles(desk)).to_have_count(3)

    await story(desk, "Club shares jump").get_by_role("link", name="sport", exact=True).click()
    await expect(desk).to_have_url(server.base + "/?tags=sport")
    await expect(desk.locator("#filter")).to_have_value("sport")
    await expect(titles(desk)).to_have_text(["Club shares jump", "Striker signs record deal"])
    await expect(desk.locator("#status")).to_have_attribute("data-state", "live")

    # Live items follow the new filter: the world item, sent first, never shows.
    assert (await post(http, server.base, item("Talks collapse", ["world"])))[0] == 201
    assert (await post(http, server.base, item("Open draw made", ["sport/tennis"])))[0] == 201
    await expect(titles(desk)).to_have_text(
        ["Open draw made", "Club shares jump", "Striker signs record deal"], timeout=5000
    )


async def test_api_validation_errors_show_next_to_their_field(
    browsing: Browsing, server: Server, http: aiohttp.ClientSession
) -> None:
    editor = await browsing.editor(server)

    def error_next_to(name: str) -> Locator:
        return editor.locator(".field", has=editor.locator(f"#{name}")).locator(".field-error")

    await editor.fill("#title", "Budget passes")
    await editor.fill("#tags", "politics, bad tag!")
    await editor.click("#submit")
    await expect(error_next_to("tags")).to_contain_text("bad tag!")
    await expect(editor.locator("#tags")).to_have_attribute("aria-invalid", "true")
    await expect(editor.locator("#form-status")).to_be_hidden()

    await editor.fill("#tags", "politics")
    await editor.fill("#url", "ftp://example.com/budget")
    await editor.click("#submit")
    await expect(error_next_to("url")).to_contain_text("http(s)")
    await expect(error_next_to("tags")).to_be_hidden()

    await editor.fill("#url", "")
    await editor.fill("#token", "not-the-token")
    await editor.click("#submit")
    await expect(error_next_to("token")).to_contain_text("not valid")

    # Nothing was published by any of these.
    assert await get_json(http, server.base + "/v1/items") == (200, {"items": []})

    await editor.fill("#token", EDITOR_TOKEN)
    await editor.click("#submit")
    await expect(editor.locator("#form-status")).to_contain_text("Published")
    await expect(error_next_to("token")).to_be_hidden()


async def test_a_new_version_replaces_its_story_and_a_withdrawal_removes_it(
    browsing: Browsing, server: Server, http: aiohttp.ClientSession
) -> None:
    desk = await browsing.desk(server)
    await post(http, server.base, item("Minister resigns", ["politics"], guid="s-1"))
    await post(http, server.base, item("Storm warning", ["weather"], guid="s-2"))
    await expect(titles(desk)).to_have_text(["Storm warning", "Minister resigns"])

    _, second = await post(
        http, server.base, item("Minister resigns over report", ["politics"], guid="s-1")
    )
    assert second["item"]["version"] == 2
    await expect(titles(desk)).to_have_text(["Minister resigns over report", "Storm warning"])
    await expect(story(desk, "Minister resigns over report").locator(".mark")).to_have_text(
        "Updated"
    )

    async with http.post(
        f"{server.base}/v1/stories/s-2/withdraw",
        json={"reason": "Issued in error"},
        headers={"Authorization": f"Bearer {EDITOR_TOKEN}"},
    ) as resp:
        assert resp.status == 200
    withdrawn = desk.locator("#feed .item.withdrawn")
    await expect(withdrawn).to_contain_text("Issued in error", timeout=5000)
    await expect(desk.get_by_text("Storm warning")).to_have_count(0)
    await expect(desk.locator("#feed .item")).to_have_count(2)
    # A page opened now gets the same picture from history.
    fresh = await browsing.desk(server)
    await expect(titles(fresh)).to_have_text(
        ["This story has been withdrawn.", "Minister resigns over report"]
    )


# ---- the desk's layout, on items spread over several days ------------------------


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def xadd(redis_url: str, stored: dict[str, Any]) -> str:
    """Append an item to the stream the way the store does (see wire/keys.py).

    The API stamps items with the current time; the layout test needs items
    from earlier days, so it writes them with ids from their publish times.
    """
    when = datetime.fromisoformat(stored["published_at"].replace("Z", "+00:00"))
    fields: dict[FieldT, EncodableT] = {
        "j": orjson.dumps(stored),
        "t": " ".join(stored["tags"]),
        "u": str(stored["urgency"]),
        "g": stored["guid"],
    }
    client = aioredis.Redis.from_url(redis_url)
    try:
        entry_id = await client.xadd(keys.STREAM, fields, id=f"{int(when.timestamp() * 1000)}-*")
        assert isinstance(entry_id, bytes)  # no decode_responses: Redis answers bytes
        return str(entry_id.decode())
    finally:
        await client.aclose()


#: A few days on the wire: (days ago, HH:MM UTC, urgency, mark, title, subtitle, tags).
# fmt: off
SAMPLE: list[tuple[int, str, int, str | None, str, str, list[str]]] = [
    (2, "06:12", 5, None, "Central bank holds rates, signals cuts later in the year",
     "Policymakers vote 7-2 to keep the key rate at 4.25%", ["business/economy"]),
    (2, "09:40", 4, "Analysis", "Why the grain corridor matters beyond the Black Sea",
     "Shipping data show exports back near pre-war levels", ["world/europe", "business"]),
    (2, "14:05", 5, None, "Champions League final moved to Lisbon",
     "Governing body cites stadium safety report", ["sport/football"]),
    (2, "20:10", 3, None, "Wildfire forces evacuations north of Los Angeles",
     "More than 12,000 residents ordered to leave as winds pick up", ["world/americas"]),
    (1, "05:30", 3, None, "Monsoon arrives early over Kerala",
     "Forecasters expect above-normal rainfall this season", ["world/asia", "weather"]),
    (1, "08:15", 2, None, "Parliament passes emergency energy bill",
     "Vote ends three days of debate; price cap takes effect in July", ["politics", "energy"]),
    (1, "11:02", 5, "Exclusive", "Carmaker in talks to build battery plant in Spain",
     "Two people familiar with the plans say a deal could come within weeks",
     ["business/autos", "world/europe"]),
    (1, "16:48", 6, None, "Tennis: top seed through to quarter-finals",
     "Straight-sets win in under two hours", ["sport/tennis"]),
    (0, "04:55", 5, None, "Asian shares edge higher as tech stocks recover",
     "Nikkei up 0.8%, Hang Seng flat in early trade", ["business/markets", "world/asia"]),
    (0, "06:20", 5, "Updated", "Talks on ceasefire to resume in Cairo on Monday",
     "Mediators say both delegations have confirmed attendance", ["world/middle-east"]),
    (0, "07:03", 4, None, "Heatwave warnings issued for southern Europe",
     "Temperatures expected to top 40C in parts of Spain and Italy",
     ["world/europe", "weather"]),
    (0, "07:41", 1, None, "Magnitude 7.1 earthquake strikes off Japan's east coast",
     "Tsunami advisory issued for Miyagi and Fukushima prefectures", ["world/asia"]),
]
# fmt: on


async def seed_sample(redis_url: str, today: datetime) -> list[tuple[datetime, str]]:
    """Write SAMPLE into the stream; return (publish time, title) pairs."""
    published = []
    for n, (ago, hhmm, urgency, mark, title, subtitle, tags) in enumerate(SAMPLE):
        hour, minute = map(int, hhmm.split(":"))
        when = (today - timedelta(days=ago)).replace(hour=hour, minute=minute)
        await xadd(
            redis_url,
            {
                "guid": f"urn:sample:{n}",
                "version": 1,
                "mark": mark,
                "pubstatus": "usable",
                "published_at": iso(when),
                "urgency": urgency,
                "title": title,
                "subtitle": subtitle,
                "tags": tags,
                "url": None,
                "body": None,
            },
        )
        published.append((when, title))
    return published


async def test_desk_groups_by_local_day_newest_first_with_marks_and_urgency(
    browsing: Browsing, make_server: ServerFactory, redis_url: str
) -> None:
    # Sample times are UTC times of the last three days; the latest is in the past.
    now = datetime.now(UTC)
    today = now.replace(second=0, microsecond=0)
    if today.replace(hour=8, minute=0) > now:
        today -= timedelta(days=1)
    published = await seed_sample(redis_url, today)
    server = await make_server()
    desk = await browsing.desk(server)

    # The viewer is in Kolkata (UTC+05:30): headings and times are theirs.
    local = ZoneInfo("Asia/Kolkata")
    newest_first = sorted(published, reverse=True)
    days: list[str] = []
    for when, _ in newest_first:
        heading = f"{when.astimezone(local).day} {when.astimezone(local):%B %Y}"
        if heading not in days:
            days.append(heading)
    await expect(desk.locator(".day-heading")).to_have_text(days)
    await expect(titles(desk)).to_have_text([title for _, title in newest_first])
    await expect(desk.locator("#feed .time")).to_have_text(
        [f"{when.astimezone(local):%H:%M}" for when, _ in newest_first]
    )
    flash = story(desk, "Magnitude 7.1 earthquake strikes off Japan's east coast")
    await expect(flash).to_have_class(re.compile(r"\burgency-1\b"))
    await expect(flash.locator(".flag")).to_have_text("Flash")
    urgent = story(desk, "Parliament passes emergency energy bill")
    await expect(urgent).to_have_class(re.compile(r"\burgency-2\b"))
    await expect(urgent.locator(".flag")).to_have_text("Urgent")
    exclusive = story(desk, "Carmaker in talks to build battery plant in Spain")
    await expect(exclusive.locator(".mark")).to_have_text("Exclusive")

    # WIRE_SCREENSHOT=1 refreshes the README's picture of the desk.
    if os.environ.get("WIRE_SCREENSHOT"):
        await desk.set_viewport_size({"width": 1100, "height": 980})
        await desk.screenshot(path=str(SCREENSHOT))
