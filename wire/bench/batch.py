"""The batch publisher scenario: items/s into Redis through batch ``POST /v1/items``.

A few clients each send JSON-array batches (every item with its own
``idempotency_key``) on a kept-alive connection, one batch in flight per
client, until ``items`` items are accepted; the figure is accepted items per
second, beside the single-item one of the ``publisher`` scenario.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from wire.bench.poster import Poster, Slot
from wire.core.ids import parse_id


@dataclass
class BatchRun:
    """What a batch publishing run produced."""

    ids: list[str] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def batch_request(poster: Poster, items: list[dict[str, Any]]) -> bytes:
    """The bytes of one batch ``POST /v1/items`` (a JSON array)."""
    body = orjson.dumps(items)
    head = (
        f"POST /v1/items HTTP/1.1\r\nHost: {poster.host}:{poster.port}\r\n"
        f"Authorization: Bearer {poster.token}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _items(run: str, tag: str, start: int, n: int, body: str | None) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for seq in range(start, start + n):
        item: dict[str, Any] = {
            "title": f"bench {run} batch {seq}",
            "tags": [tag],
            "idempotency_key": f"{run}-b-{seq}",
        }
        if body:
            item["body"] = body
        items.append(item)
    return items


async def _send(slot: Slot, request: bytes, out: BatchRun) -> None:
    status, reply = await slot.request(request)
    if status != 200:
        out.statuses[status] = out.statuses.get(status, 0) + 1
        if len(out.errors) < 5:
            out.errors.append(f"{status} {reply[:200].decode(errors='replace')}")
        return
    for result in orjson.loads(reply)["results"]:
        out.statuses[result["status"]] = out.statuses.get(result["status"], 0) + 1
        if result["status"] in (200, 201):
            out.ids.append(result["item"]["id"])
        elif len(out.errors) < 5:
            out.errors.append(orjson.dumps(result).decode())


async def publish_batches(
    poster: Poster,
    *,
    items: int,
    size: int,
    clients: int,
    tag: str,
    run: str,
    body: str | None = None,
) -> dict[str, Any]:
    """Publish ``items`` items in batches of ``size`` from ``clients`` connections.

    The requests are built before the clock starts, so the figure is the
    publisher's and Redis's, not this client's JSON encoding.
    """
    requests = [
        batch_request(poster, _items(run, tag, start, min(size, items - start), body))
        for start in range(0, items, size)
    ]
    slots = [Slot(poster.host, poster.port) for _ in range(clients)]
    for slot in slots:
        await slot.connect()
    todo = iter(requests)
    out = BatchRun()

    async def worker(slot: Slot) -> None:
        for request in todo:
            await _send(slot, request, out)

    started = time.perf_counter()
    try:
        await asyncio.gather(*(worker(s) for s in slots))
    finally:
        seconds = time.perf_counter() - started
        for slot in slots:
            slot.close()
    ids = sorted(out.ids, key=parse_id)
    return {
        "items": items,
        "batch": size,
        "clients": clients,
        "accepted": len(ids),
        "distinct": len(set(ids)),
        "seconds": seconds,
        "items_per_s": len(ids) / seconds,
        "statuses": {str(k): v for k, v in sorted(out.statuses.items())},
        "errors": out.errors,
        "verified": len(set(ids)) == items and set(out.statuses) == {201},
    }
