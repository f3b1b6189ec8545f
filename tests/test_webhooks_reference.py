"""Webhook signatures judged by the Standard Webhooks reference verifiers.

Not wire's code, nor a check written beside it: the ``standardwebhooks``
package from PyPI (the dev extra installs it) and the one from npm (installed
here with node's npm, as test_hardening_rfc6455 does for ``ws``). Each test
skips, saying why, when its verifier cannot be had. Receivers are real aiohttp
servers on loopback, the wire a real app on a real Redis.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from tests.conftest import Server, ServerFactory
from tests.support import (
    EDITOR_TOKEN,
    WEBHOOKS_FAST,
    Receiver,
    add_webhook,
    npm_package,
    publish,
    wait_for,
    webhook_control,
)

FAST = WEBHOOKS_FAST
#: The only header names a delivery carries besides HTTP's own (compared case-blind).
SIGNED = ("webhook-id", "webhook-timestamp", "webhook-signature")

NODE_VERIFIER = r"""
const { Webhook } = require("standardwebhooks");
const lines = require("fs").readFileSync(0, "utf8").split("\n").filter(Boolean);
for (const line of lines) {
  const c = JSON.parse(line);
  try {
    new Webhook(c.secret).verify(Buffer.from(c.body, "base64"), c.headers);
    process.stdout.write("ok\n");
  } catch (err) {
    process.stdout.write(String(err.message || err).replace(/\n/g, " ") + "\n");
  }
}
"""


@pytest.fixture
def reference() -> Any:
    """The PyPI verifier's ``Webhook`` class (skips when it is not installed)."""
    module = pytest.importorskip(
        "standardwebhooks.webhooks", reason="standardwebhooks (PyPI) is not installed"
    )
    return module


@pytest.fixture(scope="session")
def node_verifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding npm's ``standardwebhooks`` and a verifying script."""
    base = tmp_path_factory.getbasetemp().parent
    cache = npm_package(base, "standardwebhooks@1", "standardwebhooks")
    (cache / "verify.js").write_text(NODE_VERIFIER)
    return cache


async def node_verdicts(
    where: Path, secret: str, requests: list[tuple[dict[str, str], bytes]]
) -> list[str]:
    """npm's verifier on each request: ``ok`` or its error message."""
    cases = b"".join(
        orjson.dumps({"secret": secret, "headers": h, "body": base64.b64encode(b).decode()})
        + b"\n"
        for h, b in requests
    )
    proc = await asyncio.create_subprocess_exec(
        "node", str(where / "verify.js"), cwd=where,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(proc.communicate(cases), 30)
    return out.decode().splitlines()


@dataclass
class RawReceiver(Receiver):
    """A :class:`Receiver` that also keeps each request's header names as sent."""

    names: list[list[str]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.names.append([k.decode() for k, _ in request.raw_headers])
        return await super().handle(request)


@pytest.fixture
async def receiver() -> AsyncIterator[RawReceiver]:
    r = RawReceiver()
    await r.start()
    yield r
    await r.stop()


async def withdraw(http: aiohttp.ClientSession, server: Server, guid: str) -> dict[str, Any]:
    async with http.post(
        f"{server.base}/v1/stories/{guid}/withdraw",
        json={"reason": "légal — retiré"},
        headers={"Authorization": f"Bearer {EDITOR_TOKEN}"},
    ) as resp:
        assert resp.status == 200
        found: dict[str, Any] = (await resp.json())["item"]
        return found


async def varied_deliveries(
    http: aiohttp.ClientSession, server: Server, receiver: Receiver
) -> list[str]:
    """Publish an ordinary item, non-ASCII ones (one near the largest body), and
    a withdrawal; wait until the receiver has them all; their ids."""
    ids = [(await publish(http, server.base, "plain", ["world"], guid="g-plain"))["id"]]
    # Delivered before its withdrawal (a version withdrawn before its turn is not sent).
    await wait_for(lambda: len(receiver.ok()) >= 1, "the first delivery")
    ids.append((await publish(http, server.base, "Ünïcödé 東京 🚀", ["world"]))["id"])
    big = "Ж東🚀\u2028" * 24_000  # 96,000 characters, ~290 KB of UTF-8 (and a U+2028)
    ids.append((await publish(http, server.base, "big", ["world"], body=big))["id"])
    ids.append((await withdraw(http, server, "g-plain"))["id"])
    await wait_for(lambda: len(receiver.ok()) >= len(ids), "every delivery")
    return ids


async def test_the_pypi_verifier_accepts_items_withdrawals_large_and_non_ascii_bodies(
    make_server: ServerFactory, http: aiohttp.ClientSession, receiver: RawReceiver, reference: Any
) -> None:
    server = await make_server(**FAST)
    made = await add_webhook(http, server, receiver.url, tags=["*"])
    ids = await varied_deliveries(http, server, receiver)
    assert receiver.ok_ids() == ids
    for (headers, body), names in zip(receiver.ok(), receiver.names, strict=True):
        message = reference.Webhook(made["secret"]).verify(body, headers)
        assert message["item"]["id"] == headers["webhook-id"]
        assert orjson.loads(body) == message  # the bytes signed are the bytes sent
        # One of each signed header, and one signature (no rotation window to carry).
        signed = sorted(n.lower() for n in names if n.lower().startswith("webhook-"))
        assert signed == sorted(SIGNED)
        assert headers["webhook-signature"].count(" ") == 0
        assert headers["content-type"] == "application/json"
        other = reference.Webhook(base64.b64encode(os.urandom(32)).decode())
        with pytest.raises(reference.WebhookVerificationError):
            other.verify(body, headers)
        with pytest.raises(reference.WebhookVerificationError):
            reference.Webhook(made["secret"]).verify(body + b" ", headers)
    withdrawal = orjson.loads(receiver.ok()[-1][1])["item"]
    assert withdrawal["pubstatus"] == "canceled" and withdrawal["reason"] == "légal — retiré"
    assert len(receiver.ok()[2][1]) > 250_000


async def test_the_npm_verifier_accepts_the_same_deliveries(
    make_server: ServerFactory, http: aiohttp.ClientSession, receiver: RawReceiver,
    node_verifier: Path,
) -> None:
    server = await make_server(**FAST)
    made = await add_webhook(http, server, receiver.url, tags=["*"])
    await varied_deliveries(http, server, receiver)
    verdicts = await node_verdicts(node_verifier, made["secret"], receiver.ok())
    assert verdicts == ["ok"] * len(receiver.ok())
    other = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    refused = await node_verdicts(node_verifier, other, receiver.ok()[:1])
    assert refused != ["ok"]


async def test_retries_keep_the_webhook_id_and_each_attempt_verifies_then_rotation_applies(
    make_server: ServerFactory, http: aiohttp.ClientSession, receiver: RawReceiver, reference: Any
) -> None:
    """Every attempt of one item (failed ones too) carries the same webhook-id and
    a signature the verifier accepts now; after ``rotate-secret`` the next attempt
    of that same item is signed with the new secret only (as documented: no window)."""
    failing = True
    receiver.answer = lambda n: 503 if failing else 200
    server = await make_server(**FAST)
    made = await add_webhook(http, server, receiver.url, tags=["*"])
    first = (await publish(http, server.base, "retried", ["world"]))["id"]
    await wait_for(lambda: len(receiver.requests) >= 3, "a few failed attempts")
    rotated = (await webhook_control(http, server, made["id"], "rotate-secret"))["secret"]
    # The attempt under way at the rotation was signed before it.
    seen = len(receiver.requests) + 1
    await wait_for(lambda: len(receiver.requests) >= seen + 1, "attempts after the rotation")
    failing = False
    await wait_for(lambda: len(receiver.ok()) >= 1, "the delivery")
    assert {h["webhook-id"] for h, _ in receiver.requests} == {first}
    old, new = reference.Webhook(made["secret"]), reference.Webhook(rotated)
    for headers, body in receiver.requests[:3]:
        old.verify(body, headers)  # before the rotation: the old secret
    for headers, body in receiver.requests[seen:]:
        new.verify(body, headers)
        with pytest.raises(reference.WebhookVerificationError):
            old.verify(body, headers)
    assert len({b for _, b in receiver.requests}) == 1  # every attempt the same bytes


async def test_a_timestamp_outside_the_tolerance_is_refused_by_the_verifier(
    make_server: ServerFactory, http: aiohttp.ClientSession, receiver: RawReceiver, reference: Any
) -> None:
    """The timestamp is part of what is signed: a receiver's five-minute check
    refuses a replayed delivery, and a changed timestamp breaks the signature."""
    server = await make_server(**FAST)
    made = await add_webhook(http, server, receiver.url, tags=["*"])
    await publish(http, server.base, "stamped", ["world"])
    await wait_for(lambda: len(receiver.ok()) >= 1, "the delivery")
    headers, body = receiver.ok()[0]
    verifier = reference.Webhook(made["secret"])
    verifier.verify(body, headers)
    stamp = int(headers["webhook-timestamp"])
    for moved in (stamp - 301, stamp + 301, stamp + 1):
        with pytest.raises(reference.WebhookVerificationError):
            verifier.verify(body, {**headers, "webhook-timestamp": str(moved)})
    # What the receiver would compute for a 10-minute-old replay: refused as too old.
    replay = {**headers, "webhook-timestamp": str(stamp - 600)}
    then = datetime.fromtimestamp(stamp - 600, tz=UTC)
    replay["webhook-signature"] = verifier.sign(headers["webhook-id"], then, body)
    with pytest.raises(reference.WebhookVerificationError, match="too old"):
        verifier.verify(body, replay)
    assert json.loads(body)["item"]["title"] == "stamped"
