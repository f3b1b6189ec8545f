"""Batch publish: ``POST /v1/items`` with a JSON array or ``application/x-ndjson``.

A batch holds 1 to :data:`MAX_ITEMS` items. Each is validated on its own and
answered on its own, in input order; the valid ones are written in one Redis
round trip (one script call per item, see :mod:`wire.storage.pipeline`), so
an invalid item never holds back the others and none is half-written. An
item may carry its own ``idempotency_key`` (a top-level field of the batch
element, not stored with the item): a repeat with the same key and item
answers 200 and the first item, as the ``Idempotency-Key`` header does for a
single item (the two share one namespace).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
from aiohttp import web

from wire.core.errors import (
    ClientError,
    InvalidJSON,
    PayloadTooLarge,
    ServiceUnavailable,
    ValidationError,
    WireError,
)
from wire.core.items import MAX_KEY, idempotency_key_ok, parse_submission
from wire.storage.store import Write, Written, body_hash
from wire.web.appkeys import SETTINGS, STORE
from wire.web.metrics import METRICS

#: Items one batch may hold.
MAX_ITEMS = 1000
#: Bytes one batch body may have (a single item's body: ``MAX_BODY``, 1 MiB).
MAX_BATCH_BODY = 16 << 20
#: Bytes one ndjson line may have: as much as a single item's body.
MAX_LINE = 1 << 20
#: Lines, blank ones included, one ndjson body may have. Counted (in C)
#: before the body is split: 16 MiB of two-byte lines would otherwise become
#: millions of bytes objects, a quarter of a GB, before the count said no.
MAX_LINES = 10 * MAX_ITEMS
NDJSON = "application/x-ndjson"
#: The batch element's field that carries its idempotency key.
KEY_FIELD = "idempotency_key"

log = logging.getLogger("wire.publisher.batch")


@dataclass(frozen=True, slots=True)
class Checked:
    """One batch element after validation: the write to make, or why not."""

    write: Write | None
    error: ClientError | None = None


def ndjson_lines(body: bytes) -> list[bytes]:
    """The non-blank lines of an ndjson body, after the batch size check."""
    if body.count(b"\n") >= MAX_LINES:
        raise PayloadTooLarge(
            f"an ndjson batch has at most {MAX_LINES:,} lines, blank ones included"
        )
    lines = [line for line in body.split(b"\n") if line.strip()]
    check_count(len(lines))
    return lines


def check_count(n: int) -> None:
    """Refuse an empty batch (400) or one of more than :data:`MAX_ITEMS` items (413)."""
    if n == 0:
        raise ValidationError(f"a batch holds 1 to {MAX_ITEMS:,} items; this one is empty")
    if n > MAX_ITEMS:
        raise PayloadTooLarge(f"a batch holds at most {MAX_ITEMS:,} items; this one has {n:,}")


def decode_line(line: bytes) -> object:
    """One ndjson line's JSON value; a line too long or not JSON is that item's error."""
    if len(line) > MAX_LINE:
        raise PayloadTooLarge(f"the line is longer than {MAX_LINE:,} bytes")
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError as err:
        raise InvalidJSON(f"the line is not valid JSON: {err.msg}") from None


def check_element(data: object, language: str, now: datetime) -> Write:
    """Validate one batch element (the item, maybe with its ``idempotency_key``)."""
    key = None
    if isinstance(data, dict) and KEY_FIELD in data:
        data = dict(data)
        key = data.pop(KEY_FIELD)
        if not isinstance(key, str) or not idempotency_key_ok(key):
            raise ValidationError(
                f"{KEY_FIELD} must be 1-{MAX_KEY} visible ASCII characters", field=KEY_FIELD
            )
    sub = parse_submission(data, now=now, default_language=language)
    # The digest of the item without its key: the same item sent alone with
    # the key as its Idempotency-Key header is a repeat, not a reuse.
    return Write(sub, key, body_hash(data) if key else "")


def check_all(request: web.Request, elements: Sequence[object | ClientError]) -> list[Checked]:
    """Validate every element; an error in one is that element's answer."""
    language, now = request.app[SETTINGS].default_language, datetime.now(UTC)
    checked = []
    for element in elements:
        if isinstance(element, ClientError):
            checked.append(Checked(None, element))
            continue
        try:
            checked.append(Checked(check_element(element, language, now)))
        except ClientError as err:
            checked.append(Checked(None, err))
    return checked


async def publish_checked(request: web.Request, checked: list[Checked]) -> list[bytes]:
    """Write the valid items in one round trip; every element's answer, in order."""
    writes = [c.write for c in checked if c.write is not None]
    written = iter(await request.app[STORE].publish_batch(writes) if writes else [])
    answers, created = [], 0
    for c in checked:
        if c.write is None:
            answers.append(_error_answer(c.error))
            continue
        outcome = next(written)
        if isinstance(outcome, WireError):
            answers.append(_error_answer(outcome))
            continue
        embargoed = c.write.sub.embargo_until is not None
        created += outcome.created and not embargoed
        answers.append(_item_answer(outcome, embargoed))
    if created:
        request.app[METRICS].published.labels("item").inc(created)
    return answers


def _item_answer(written: Written, embargoed: bool) -> bytes:
    """``{"status": 201|202|200, "item": {...}}`` as the single path would answer."""
    status = (202 if embargoed else 201) if written.created else 200
    return b'{"status":%d,"item":%s}' % (status, written.json)


def _error_answer(err: WireError | None) -> bytes:
    """``{"status": 4xx|503|500, "error": {"code", "message", "field"?}}``."""
    if isinstance(err, ClientError):
        return orjson.dumps({"status": err.status, "error": err.as_dict()})
    if isinstance(err, ServiceUnavailable):
        return orjson.dumps({"status": 503, "error": err.as_dict()})
    # A key of a foreign type (KeyConflict): damaged data, not bad input.
    log.error("batch publish: %s", err)
    return b'{"status":500,"error":{"code":"internal_error","message":"internal error"}}'


async def publish_json_batch(request: web.Request, elements: list[object]) -> web.Response:
    """A JSON array batch: ``{"results": [...]}``, one result per element, in order."""
    check_count(len(elements))
    answers = await publish_checked(request, check_all(request, elements))
    body = b'{"results":[' + b",".join(answers) + b"]}"
    return web.Response(body=body, content_type="application/json")


async def publish_ndjson_batch(request: web.Request, body: bytes) -> web.Response:
    """An ndjson batch: one result line per non-blank input line, in order."""
    elements: list[object | ClientError] = []
    for line in ndjson_lines(body):
        try:
            elements.append(decode_line(line))
        except ClientError as err:
            elements.append(err)
    answers = await publish_checked(request, check_all(request, elements))
    return web.Response(body=b"\n".join(answers) + b"\n", content_type=NDJSON)
