"""``wire export``: stored items, one JSON or IPTC ninjs document per line.

It pages through ``GET /v1/items?after=<id>`` from the oldest kept item (or
from ``--after``), so it can export everything the stream still holds;
withdrawn stories appear as their withdrawals (``pubStatus: canceled`` in
ninjs), never with their text. ``firstCreated`` is filled in for versions whose
version 1 was exported earlier in the same run. A range that retention removed
after ``--after`` (before the export got there) is named on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

import orjson

from wire.cli.client import add_url_flag, answer_of, describe_error
from wire.core import ninjs
from wire.core.errors import ValidationError
from wire.core.ids import ZERO, StreamKey, parse_id
from wire.core.protocol import TRUNCATED

MAX_PAGE = 500  # the API's largest ?limit


class ExportError(Exception):
    """The server refused a page: the message says why."""


def add_command(sub: Any) -> None:
    """Register ``wire export`` on the ``wire`` parser."""
    exp = sub.add_parser(
        "export",
        help="write stored items to stdout, one JSON or ninjs document per line "
        "(token: WIRE_TOKEN, when the server needs one)",
    )
    add_url_flag(exp)
    exp.add_argument("--format", choices=("json", "ninjs"), default="json")
    exp.add_argument("--tags", help="comma-separated tags (default: every item)")
    exp.add_argument("--lang", help="comma-separated language tags, e.g. en,ru (default: all)")
    exp.add_argument(
        "--after", default="0", type=_stream_id, metavar="ID", help="start after this stream id"
    )
    exp.add_argument("--limit", type=_positive, metavar="N", help="stop after N documents")
    exp.add_argument(
        "--page-size", type=_page_size, default=MAX_PAGE, metavar="N", help="items per request"
    )
    exp.set_defaults(handler=export_command, usage=exp.error)


def _stream_id(raw: str) -> str:
    """``--after``: checked here, so a typo is a usage error and not a server's 400."""
    try:
        parse_id(raw)
    except ValidationError:
        raise argparse.ArgumentTypeError(f"not a stream id like 1717236000000-0: {raw!r}") from None
    return raw


def _http_url(raw: str) -> str | None:
    """Why ``raw`` is no base URL to export from, or None when it is one."""
    try:
        parts = urllib.parse.urlsplit(raw)
    except ValueError as err:
        return f"not an http(s) URL: {raw!r} ({err})"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"not an http(s) URL: {raw!r}"
    return None


def _positive(raw: str) -> int:
    if not raw.isascii() or not raw.isdigit() or len(raw) > 9 or int(raw) < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {raw!r}")
    return int(raw)


def _page_size(raw: str) -> int:
    value = _positive(raw)
    if value > MAX_PAGE:
        raise argparse.ArgumentTypeError(f"at most {MAX_PAGE}")
    return value


def fetch_page(
    base: str,
    token: str | None,
    *,
    after: str,
    limit: int,
    tags: str | None,
    lang: str | None = None,
) -> tuple[list[dict[str, Any]], str | None, list[dict[str, str]]]:
    """One page of ``GET /v1/items?after=...`` (oldest first), its ``next`` cursor, and
    the ranges retention removed before the read reached them (``history_truncated``)."""
    query = {"after": after, "limit": str(limit)}
    if tags:
        query["tags"] = tags
    if lang:
        query["lang"] = lang
    req = urllib.request.Request(base.rstrip("/") + "/v1/items?" + urllib.parse.urlencode(query))
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return _page(resp.read())
    except urllib.error.HTTPError as err:
        raise ExportError(_describe(err.code, err.read())) from None


def _page(
    body: bytes,
) -> tuple[list[dict[str, Any]], str | None, list[dict[str, str]]]:
    """A 200 answer's items, ``next`` and gaps; ExportError when it is not such a page
    (a proxy's HTML, another service on the port), rather than a traceback."""
    with contextlib.suppress(orjson.JSONDecodeError):
        answer = orjson.loads(body)
        if isinstance(answer, dict) and _is_page(answer):
            return answer["items"], answer.get("next"), answer.get(TRUNCATED) or []
    raise ExportError(f"the answer is not a page of items: {body[:80]!r}")


def _is_page(answer: dict[str, Any]) -> bool:
    items, going_on, gaps = answer.get("items"), answer.get("next"), answer.get(TRUNCATED)
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        return False
    if going_on is not None and (not isinstance(going_on, str) or _key(going_on) is None):
        return False
    return gaps is None or isinstance(gaps, list)


def _key(raw: object) -> StreamKey | None:
    """The stream id ``raw`` names, or None when it names none."""
    if not isinstance(raw, str):
        return None
    try:
        return parse_id(raw)
    except ValidationError:
        return None


def _describe(status: int, body: bytes) -> str:
    return describe_error(status, answer_of(status, body))


def items(
    base: str,
    token: str | None,
    *,
    after: str = "0",
    limit: int | None = None,
    tags: str | None = None,
    lang: str | None = None,
    page_size: int = MAX_PAGE,
    on_gap: Callable[[dict[str, str]], None] = lambda gap: None,
) -> Iterator[dict[str, Any]]:
    """Every item after ``after`` (at most ``limit``), oldest first, a page at a time;
    ``on_gap`` hears of each range retention removed on the way."""
    sent = 0
    while limit is None or sent < limit:
        want = page_size if limit is None else min(page_size, limit - sent)
        page, going_on, gaps = fetch_page(
            base, token, after=after, limit=want, tags=tags, lang=lang
        )
        for gap in gaps:
            on_gap(gap)
        fresh = _fresh(page, after)[:want]
        yield from fresh
        sent += len(fresh)
        # A page can be short (or empty) before the end: a read scans a
        # bounded number of entries; only a missing cursor means the end.
        if going_on is None:
            return
        after = _advanced(after, going_on)


def _fresh(page: list[dict[str, Any]], after: str) -> list[dict[str, Any]]:
    """The page's items past ``after``, each past the one before: a server that
    repeats an item, or steps back, never gets it written twice."""
    last, fresh = parse_id(after), []
    for item in page:
        key = _key(item.get("id"))
        if key is not None and key > last:
            fresh.append(item)
            last = key
    return fresh


def _advanced(after: str, going_on: str) -> str:
    """The next page's cursor; ExportError unless it is past this one (a server
    answering the same ``next`` again would make the export loop forever)."""
    if parse_id(going_on) <= parse_id(after):
        raise ExportError(f"the server's next cursor {going_on} does not advance past {after}")
    return going_on


class NinjsWriter:
    """Items to ninjs, remembering when each story was first created."""

    def __init__(self) -> None:
        self.first: dict[str, str] = {}

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        guid = item["guid"]
        if item.get("version") == 1 and isinstance(item.get("published_at"), str):
            self.first[guid] = item["published_at"]
        return ninjs.to_ninjs(item, self.first.get(guid))


def export(args: argparse.Namespace, out: BinaryIO) -> int:
    """Write the documents; return how many."""
    render = NinjsWriter() if args.format == "ninjs" else None
    count = 0
    for item in items(
        args.url,
        os.environ.get("WIRE_TOKEN") or None,
        after=args.after,
        limit=args.limit,
        tags=args.tags,
        lang=getattr(args, "lang", None),
        page_size=args.page_size,
        on_gap=_warn_gap,
    ):
        out.write(orjson.dumps(render(item) if render else item) + b"\n")
        count += 1
    out.flush()
    return count


def _warn_gap(gap: dict[str, str]) -> None:
    """Say on stderr what retention removed, except the stream's start: an export
    from the beginning (``--after 0``) means "everything still kept"."""
    if parse_id(gap["after"]) != ZERO:
        print(
            f"wire export: items after {gap['after']} up to {gap['upto']} are no longer "
            "kept (retention); exporting everything still kept",
            file=sys.stderr,
        )


def export_command(args: argparse.Namespace) -> int:
    """Exit 0, 1 when the server refused (or answered nonsense), 2 for bad
    arguments, 3 when it cannot be reached."""
    wrong = _http_url(args.url)
    if wrong is not None:
        args.usage(f"--url: {wrong}")
    try:
        export(args, sys.stdout.buffer)
    except ExportError as err:
        print(f"wire export: {err}", file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
        if isinstance(err, BrokenPipeError):  # `wire export | head`: not an error
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
        print(f"wire export: cannot reach {args.url}: {err}", file=sys.stderr)
        return 3
    return 0
