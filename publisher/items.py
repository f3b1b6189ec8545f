"""Publisher routes: ``POST /v1/items`` and the history reads.

Every request is validated in full before anything is written, and a publish
is one atomic Redis script, so a rejected or interrupted request leaves
nothing half-written.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import orjson
from aiohttp import web

from publisher.access import require_editor, require_reader
from publisher.batch import (
    KEY_FIELD,
    MAX_BATCH_BODY,
    NDJSON,
    publish_json_batch,
    publish_ndjson_batch,
)
from publisher.embargo import accept_embargoed
from publisher.ledger import record
from publisher.longpoll import poll_after, query_wait
from publisher.query import query_languages, query_limit, query_tags
from wire.core import ninjs
from wire.core.errors import (
    Gone,
    InvalidBody,
    InvalidJSON,
    NotFound,
    PayloadTooLarge,
    RequestTimeout,
    UnsupportedMediaType,
    ValidationError,
    quoted,
)
from wire.core.ids import StreamKey, format_id, parse_cursor, parse_id
from wire.core.items import MAX_KEY, idempotency_key_ok, parse_submission
from wire.core.ledger import HISTORY
from wire.core.protocol import TRUNCATED, truncated_ranges
from wire.core.resume import Window
from wire.storage.store import Filter, body_hash
from wire.web.appkeys import SETTINGS, STORE
from wire.web.http import check_encoding, raw_json, send_continue
from wire.web.metrics import METRICS

MAX_BODY = 1024 * 1024
JSON_TYPES = ("application/json",)


def setup_items(app: web.Application) -> None:
    """Add the item routes to ``app``."""
    app.router.add_post("/v1/items", post_item)
    app.router.add_get("/v1/items", list_items)
    app.router.add_get("/v1/items/{id}", get_item)


async def read_json(request: web.Request, types: tuple[str, ...] = JSON_TYPES) -> object:
    """The request's JSON body, after the media type and size checks."""
    return decode_json(await read_body(request, types))


async def read_body(request: web.Request, types: tuple[str, ...]) -> bytes:
    """The request's body, after the media type and size checks.

    The limit is MAX_BODY, but MAX_BATCH_BODY for an ndjson batch: a JSON
    body (one item or an array) is refused from its declared length alone,
    before a byte of it is sent, as it always was.
    """
    if request.content_type not in types:
        raise UnsupportedMediaType(
            f"Content-Type must be {' or '.join(types)}, got {quoted(request.content_type)}"
        )
    check_encoding(request)
    batch = request.content_type == NDJSON
    limit = MAX_BATCH_BODY if batch else MAX_BODY
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(limit, hint=NDJSON in types)
    # Only now, with every check that needs no body passed, is the client
    # told to send it (routes defer "100 Continue", see wire.http).
    await send_continue(request)
    # A client that trickles its body must not hold a handler forever. A body
    # that came whole with its headers (most do) cannot wait: no timer for it.
    timeout = request.app[SETTINGS].idle_timeout
    try:
        if request.content.is_eof():
            return await _read(request, batch)
        async with asyncio.timeout(timeout):
            return await _read(request, batch)
    except web.HTTPRequestEntityTooLarge:
        raise _too_large(MAX_BODY, hint=NDJSON in types) from None
    except web.RequestPayloadError:
        raise InvalidBody(
            "the body could not be read: corrupt Content-Encoding data or broken chunked framing"
        ) from None
    except TimeoutError:
        raise RequestTimeout(f"the body did not arrive within {timeout:g} s") from None


def _read(request: web.Request, batch: bool) -> Awaitable[bytes]:
    # The app's client_max_size is MAX_BODY and counts decompressed bytes: a
    # gzip body stops inflating just past the limit.
    return _read_batch(request) if batch else request.read()


def _too_large(limit: int, *, hint: bool = False) -> PayloadTooLarge:
    """413 naming the limit (with ``hint``: and how a bigger batch may go)."""
    more = f" (a batch of up to {MAX_BATCH_BODY:,} bytes goes as {NDJSON})" if hint else ""
    return PayloadTooLarge(f"the body is larger than {limit:,} bytes{more}")


async def _read_batch(request: web.Request) -> bytes:
    """An ndjson body, up to MAX_BATCH_BODY (decompressed) bytes."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.readany():
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_BATCH_BODY:
            raise _too_large(MAX_BATCH_BODY)
    return b"".join(chunks)


def decode_json(body: bytes) -> object:
    """A body's JSON value; 400 ``invalid_json`` when it is not JSON."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as err:
        raise InvalidJSON(f"the body is not valid JSON: {err.msg}") from None


def idempotency_key(request: web.Request) -> str | None:
    """The ``Idempotency-Key`` header, checked: 1-255 visible ASCII characters."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not idempotency_key_ok(key):
        raise ValidationError(
            f"Idempotency-Key must be 1-{MAX_KEY} visible ASCII characters",
            field="Idempotency-Key",
        )
    return key


async def post_item(request: web.Request) -> web.Response:
    """Validate and publish one item: 201 when new, 200 for an idempotent repeat
    (an embargoed item: 202 when new, 200 for a repeat); or a batch (a JSON
    array or ndjson, see :mod:`publisher.batch`): 200 and a result per item."""
    require_editor(request)
    key = idempotency_key(request)
    body = await read_body(request, (*JSON_TYPES, ninjs.MEDIA_TYPE, NDJSON))
    if request.content_type == NDJSON:
        _no_batch_key(key)
        return await publish_ndjson_batch(request, body)
    data = decode_json(body)
    if isinstance(data, list) and request.content_type in JSON_TYPES:
        _no_batch_key(key)
        return await publish_json_batch(request, data)
    language = request.app[SETTINGS].default_language
    if request.content_type == ninjs.MEDIA_TYPE:
        submission = ninjs.parse_ninjs(data, default_language=language)
    else:
        submission = parse_submission(data, default_language=language)
    digest = body_hash(data) if key else ""
    if submission.embargo_until is not None:
        return await accept_embargoed(request, submission, key, digest)
    published = await request.app[STORE].publish(submission, idempotency_key=key, digest=digest)
    if published.created:
        request.app[METRICS].published.labels("item").inc()
    return raw_json(b'{"item":' + published.json + b"}", 201 if published.created else 200)


def _no_batch_key(key: str | None) -> None:
    """A batch's keys are per item: an Idempotency-Key header on one is refused."""
    if key is not None:
        raise ValidationError(
            f"a batch takes each item's {KEY_FIELD}, not an Idempotency-Key header",
            field="Idempotency-Key",
        )


async def list_items(request: web.Request) -> web.Response:
    """Latest matching items (newest first, or older than ``before``), or those after
    ``after`` (oldest first); ``next`` is the cursor to go on from, when there is more.

    A read scans at most ``scan_budget`` stream entries, so a filter that
    matches nothing answers quickly, with the ``next`` cursor to go on from.
    With ``wait`` (a long poll, see :mod:`publisher.longpoll`) a read after
    ``after`` may wait for an item, and always carries ``next``.
    """
    grant = require_reader(request)
    tags, limit = grant.narrow(query_tags(request)), query_limit(request)
    wanted = Filter(tags, query_languages(request))
    after, before = request.query.get("after"), request.query.get("before")
    wait = query_wait(request)
    if after is not None and before is not None:
        raise ValidationError("give after or before, not both", field="before")
    if "wait" in request.query and after is None:
        raise ValidationError("wait needs after (the cursor to wait from)", field="wait")
    going_on: StreamKey | None
    gaps: tuple[Window, ...] = ()
    if after is not None and "wait" in request.query:
        cursor = parse_cursor(after, field="after")
        entries, going_on, gaps = await poll_after(request, cursor, wanted, grant, limit, wait)
    elif after is not None:
        cursor = parse_cursor(after, field="after")
        scan = await request.app[STORE].history_after(
            cursor, tags, limit, languages=wanted.languages
        )
        entries, going_on, gaps = grant.visible(scan.entries), scan.next, scan.gaps
    else:
        start = parse_id(before, field="before") if before is not None else None
        scan = await request.app[STORE].history_before(
            tags, limit, before=start, languages=wanted.languages
        )
        entries, going_on = grant.visible(scan.entries), scan.next
    record(request, grant, HISTORY, entries)
    items = b",".join(e.json for e in entries)
    tail = b',"next":"%s"' % format_id(going_on).encode() if going_on is not None else b""
    if gaps:
        tail += b',"%s":%s' % (TRUNCATED.encode(), orjson.dumps(truncated_ranges(gaps)))
    return raw_json(b'{"items":[' + items + b"]" + tail + b"}")


async def get_item(request: web.Request) -> web.Response:
    """One item by stream id (``?format=ninjs``: as an IPTC ninjs document).

    An item outside the reader's grant is answered exactly like a missing one,
    so that ids cannot be probed for what exists.
    """
    grant = require_reader(request)
    as_ninjs = ninjs.wants_ninjs(request.query)
    raw = request.match_info["id"]
    key = parse_id(raw)
    store = request.app[STORE]
    entry = await store.get(format_id(key))
    if entry is not None:
        entry = grant.view(entry)
    if entry is None:
        raise NotFound(f"no item with id {raw}")
    if not await store.redact([entry]):
        raise Gone(f"item {raw} belongs to a withdrawn story; see /v1/stories/{entry.guid}")
    if as_ninjs:
        item = orjson.loads(entry.json)
        # Of the rest of the story only version 1's time is needed: read just it.
        first = ninjs.first_created([item])
        if item.get("version") != 1:
            first = (await store.first_published([entry.guid], grant.sees)).get(entry.guid)
        record(request, grant, HISTORY, [entry])
        return ninjs_response(ninjs.to_ninjs(item, first))
    record(request, grant, HISTORY, [entry])
    return raw_json(b'{"item":' + entry.json + b"}")


def ninjs_response(doc: object) -> web.Response:
    """A ninjs document, as ``application/vnd.iptc.ninjs+json``."""
    return web.Response(body=orjson.dumps(doc), content_type=ninjs.MEDIA_TYPE)
