"""The event stream judged by Node's ``eventsource`` package, the EventSource
most Node apps use (installed with node's npm, as test_hardening_rfc6455 does
for ``ws``; skipped, saying why, where it cannot be had).

Every item, whatever text it holds, arrives intact, in order and once; and
when the server ends the stream (a restart), the package's own reconnect
with ``Last-Event-ID`` misses nothing and repeats nothing.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import ServerFactory
from tests.support import item, npm_package, post
from tests.test_foreign_formats import hostile_items

WAIT = 15.0
#: 4.x, the newest line that runs on Node 20 (fetch-based, WHATWG parsing), and
#: 2.x, the node:http one that many installed apps still pin.
PACKAGES = ["eventsource@4", "eventsource@2"]

NODE_CLIENT = r"""
const loaded = require("eventsource");
const EventSource = loaded.EventSource ?? loaded;  // 4.x exports it by name, 2.x is it
const say = (m) => process.stdout.write(JSON.stringify(m) + "\n");
const source = new EventSource(process.argv[2], {
  fetch: (url, init) => {  // 4.x only: 2.x ignores it and logs no request
    say({type: "request", lastEventId: init.headers["Last-Event-ID"] ?? null});
    return fetch(url, init);
  },
});
source.addEventListener("subscribed", () => say({type: "subscribed"}));
source.addEventListener("item", (e) => say({type: "item", id: e.lastEventId, data: e.data}));
source.onerror = () => say({type: "error", readyState: source.readyState});
"""


@pytest.fixture(scope="session", params=PACKAGES)
def node_eventsource(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A directory whose node_modules holds ``eventsource``, installed once and kept."""
    package: str = request.param
    cache = npm_package(tmp_path_factory.getbasetemp().parent, package, "eventsource")
    (cache / "client.cjs").write_text(NODE_CLIENT)
    return cache


class NodeSource:
    """The Node client's printed events, read as they come."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.seen: list[dict[str, Any]] = []

    async def until(self, kind: str, count: int = 1) -> list[dict[str, Any]]:
        """Read until ``count`` more events of ``kind`` have come; those events."""
        assert self.proc.stdout is not None
        got: list[dict[str, Any]] = []
        while len(got) < count:
            try:
                line = await asyncio.wait_for(self.proc.stdout.readline(), WAIT)
            except TimeoutError:
                seen = [(m["type"], m.get("id") or m.get("lastEventId")) for m in self.seen]
                raise AssertionError(f"no {count} {kind} events in {WAIT} s: {seen}") from None
            assert line, f"node ended early after {self.seen[-3:]}"
            self.seen.append(json.loads(line))
            if self.seen[-1]["type"] == kind:
                got.append(self.seen[-1])
        return got


@asynccontextmanager
async def node_source(where: Path, url: str) -> AsyncIterator[NodeSource]:
    proc = await asyncio.create_subprocess_exec(
        "node", str(where / "client.cjs"), url, cwd=where, stdout=asyncio.subprocess.PIPE,
        limit=4 * 1024 * 1024,  # a line holds a 100,000-character body
    )  # fmt: skip
    try:
        yield NodeSource(proc)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def publish_all(http: aiohttp.ClientSession, base: str, bodies: list[Any]) -> list[Any]:
    """POST each item in turn: what the publisher stored, in stream order."""
    stored = []
    for body in bodies:
        status, answer = await post(http, base, body)
        assert status == 201, answer
        assert (answer["item"]["title"], answer["item"]["body"]) == (body["title"], body["body"])
        stored.append(answer["item"])
    return stored


async def test_eventsource_gets_every_hostile_item_intact_in_order_once_across_a_restart(
    make_server: ServerFactory, http: aiohttp.ClientSession, node_eventsource: Path
) -> None:
    """Items before, during and after a gateway restart; the client prints each
    event's ``lastEventId`` and raw ``data``, and each request's ``Last-Event-ID``."""
    tag = "sse-" + os.urandom(4).hex()
    gateway = await make_server()
    publisher = await make_server(gateway=False)  # stays up while the gateway restarts
    url = f"{gateway.base}/v1/sse?tags={tag}"
    async with node_source(node_eventsource, url) as source:
        await source.until("subscribed")
        before = await publish_all(http, publisher.base, hostile_items(tag, "Before"))
        got = await source.until("item", len(before))

        await gateway.stop()  # the server ends the stream
        await source.until("error")
        during = await publish_all(http, publisher.base, hostile_items(tag, "During"))
        await make_server(port=gateway.settings.port)
        await source.until("subscribed")
        # The last item is plain: a repeat of any hostile one would come before it.
        last = item("End", [tag], body="end")
        after = await publish_all(http, publisher.base, [*hostile_items(tag, "After"), last])
        got += await source.until("item", len(during) + len(after))

        sent = before + during + after
        assert [g["id"] for g in got] == [s["id"] for s in sent]
        assert [json.loads(g["data"]) for g in got] == sent
        requests = [m["lastEventId"] for m in source.seen if m["type"] == "request"]
        if requests:  # 4.x: the first request had none, every reconnect the last id read
            assert requests[0] is None and set(requests[1:]) == {before[-1]["id"]}, requests
