"""``wire publish``: one item from flags, or a file of items (JSONL or a JSON array) sent in
batches of up to 1,000, safe to run again."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO, TextIO, cast

import orjson

from wire.cli.client import (
    UNREACHABLE,
    Api,
    add_url_flag,
    answer_of,
    api_for,
    describe_error,
    editor_token,
    post_reporting,
)

PROGRESS_FROM = 20  # lines; shorter batches finish before a bar would help
RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0)


def add_command(sub: Any) -> None:
    """Register ``wire publish``."""
    pub = sub.add_parser(
        "publish",
        help="publish an item, or a JSONL file of items, through the HTTP API "
        "(token: WIRE_TOKEN or --token)",
    )
    add_url_flag(pub)
    pub.add_argument("--token", help="editor token (default: $WIRE_TOKEN)")
    pub.add_argument(
        "--file",
        metavar="PATH",
        help="publish every item of a JSONL file or JSON array (- for stdin), in batches "
        "of up to 1,000; safe to run again",
    )
    pub.add_argument("--title")
    pub.add_argument(
        "--tag", action="append", dest="tags", metavar="TAG", help="a tag; repeat for more"
    )
    pub.add_argument("--subtitle")
    pub.add_argument("--body")
    pub.add_argument("--mark")
    pub.add_argument("--link", "--item-url", dest="link", help="link to the full story")
    pub.add_argument("--urgency", type=int)
    pub.add_argument("--guid")
    _content_flags(pub)
    pub.set_defaults(handler=publish_command, usage=pub.error)


#: Flags that become text fields of the item as they are (flag -> field).
TEXT_FLAGS = {
    "byline": "byline",
    "slugline": "slugline",
    "located": "located",
    "language": "language",
    "summary": "summary",
    "ednote": "ednote",
    "copyright": "copyright",
    "usage_terms": "usage_terms",
    "translation_of": "translation_of",
}


def _content_flags(pub: Any) -> None:
    """The newsroom fields: byline, dateline, language, subjects, a picture..."""
    pub.add_argument("--byline", help="who wrote it, e.g. 'By Aiko Tanabe'")
    pub.add_argument("--slugline", help="a short keyword handle, e.g. QUAKE-JAPAN")
    pub.add_argument("--located", help="the dateline place, e.g. TOKYO")
    pub.add_argument("--language", help="a BCP 47 tag, e.g. en, ru, pt-BR (default: the wire's)")
    pub.add_argument("--summary")
    pub.add_argument("--ednote", help="a note to client editors")
    pub.add_argument("--copyright")
    pub.add_argument("--usage-terms", dest="usage_terms")
    pub.add_argument("--translation-of", dest="translation_of", metavar="GUID")
    pub.add_argument(
        "--correction", action="store_true", help="this version fixes an error (needs --guid)"
    )
    pub.add_argument(
        "--advisory", action="store_true", help="a note to editors, not for publication"
    )
    pub.add_argument(
        "--subject",
        action="append",
        dest="subjects",
        metavar="CODE[=NAME]",
        help="e.g. medtop:20000051=disaster and accident; repeat for more",
    )
    pub.add_argument("--picture", metavar="URL", help="an http(s) picture to go with the story")
    pub.add_argument("--caption", help="the picture's caption")
    pub.add_argument("--credit", help="the picture's credit")
    pub.add_argument("--alt", help="the picture's text alternative")


def publish_command(args: argparse.Namespace) -> int:
    """``wire publish``: one item from flags, or a batch with ``--file``."""
    if args.file is not None and (args.title is not None or args.tags):
        args.usage("--file publishes the items in the file; leave out --title and --tag")
    if args.file is None and (args.title is None or not args.tags):
        args.usage("give --title and at least one --tag, or --file")
    if args.picture is None and (args.caption or args.credit or args.alt):
        args.usage("--caption, --credit and --alt describe a --picture; give its URL")
    token = editor_token(args)
    if not token:
        print("wire publish: set WIRE_TOKEN (or --token) to an editor token", file=sys.stderr)
        return 2
    api = api_for(args, token)
    try:
        return publish_file(api, args.file) if args.file is not None else publish_one(api, args)
    finally:
        api.close()


def publish_one(api: Api, args: argparse.Namespace) -> int:
    """POST the item the flags describe; print the stored item."""
    code, stored = post_reporting(api, item_from_flags(args), "wire publish")
    if stored is not None:
        print(orjson.dumps(stored).decode())
    return code


def item_from_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The JSON body of ``POST /v1/items`` for ``wire publish --title ... --tag ...``."""
    fields: dict[str, Any] = {
        "title": args.title,
        "tags": args.tags,
        "subtitle": args.subtitle,
        "body": args.body,
        "mark": args.mark,
        "url": args.link,
        "urgency": args.urgency,
        "guid": args.guid,
    }
    fields.update({name: getattr(args, flag, None) for flag, name in TEXT_FLAGS.items()})
    item = {k: v for k, v in fields.items() if v is not None}
    if getattr(args, "correction", False):
        item["correction"] = True
    if getattr(args, "advisory", False):
        item["type"] = "advisory"
    if getattr(args, "subjects", None):
        item["subjects"] = [subject(raw) for raw in args.subjects]
    if getattr(args, "picture", None):
        item["associations"] = [picture(args)]
    return item


def subject(raw: str) -> dict[str, str]:
    """``medtop:20000051=disaster and accident`` as ``{"code": ..., "name": ...}``."""
    code, _, name = raw.partition("=")
    return {"code": code.strip(), "name": name.strip()} if name.strip() else {"code": code.strip()}


def picture(args: argparse.Namespace) -> dict[str, Any]:
    """The ``--picture`` association, its one rendition the picture itself."""
    assoc: dict[str, Any] = {"type": "picture", "uri": args.picture}
    for name in ("caption", "credit", "alt"):
        if getattr(args, name, None):
            assoc[name] = getattr(args, name)
    assoc["renditions"] = [{"name": "original", "href": args.picture}]
    return assoc


# -- batches ----------------------------------------------------------------


def line_key(path: str, lineno: int, line: bytes) -> str:
    """The Idempotency-Key of one line: the same file, line number and text give the same key.

    So a batch run again after an interruption stores nothing twice, while an
    edited line (or the same item on another line) is a new request.
    """
    where = os.path.abspath(path) if path != "-" else "<stdin>"
    digest = hashlib.sha256(f"{where}\0{lineno}\0".encode() + line).hexdigest()
    return f"wire-file-{digest}"


#: Items per request, and bytes of items per request (the server takes up to
#: 1,000 items and 16 MiB; an item over 1 MiB is refused without being sent).
BATCH_ITEMS = 1000
BATCH_BYTES = 8 << 20
MAX_LINE = 1 << 20
#: A JSON array is parsed whole, so it is refused beyond this (JSONL streams).
MAX_ARRAY = 64 << 20
BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True, slots=True)
class Entry:
    """One item of the file: where it is (line or element number), its JSON text, its key.

    An item over MAX_LINE is ``oversize``: its text is not kept (it is never sent).
    """

    number: int
    raw: bytes
    key: str
    oversize: bool = False

    def line(self) -> bytes:
        """The ndjson line to send: the item with its ``idempotency_key`` added.

        A line that is not a JSON object goes as it is: the server answers
        why it is not an item, in its place.
        """
        try:
            data = orjson.loads(self.raw)
        except orjson.JSONDecodeError:
            return self.raw
        if not isinstance(data, dict) or "idempotency_key" in data:
            return self.raw
        return orjson.dumps({**data, "idempotency_key": self.key})


def entry(path: str, number: int, raw: bytes) -> Entry:
    """The entry for one line or element; an oversize one keeps neither text nor key."""
    if len(raw) > MAX_LINE:
        return Entry(number, b"", "", oversize=True)
    return Entry(number, raw, line_key(path, number, raw))


@contextlib.contextmanager
def open_source(path: str) -> Iterator[BinaryIO]:
    """The file, or stdin (``-``) copied to a temporary file: seekable either way, so
    it can be looked at before it is read, without holding it in memory."""
    if path != "-":
        with open(path, "rb") as f:
            yield f
        return
    with tempfile.SpooledTemporaryFile(max_size=BATCH_BYTES) as spool:
        shutil.copyfileobj(sys.stdin.buffer, spool)
        spool.seek(0)
        yield cast(BinaryIO, spool)


def read_lines(source: BinaryIO) -> Iterator[tuple[int, bytes]]:
    """(line number, text) of each non-blank line, read a line at a time; lines end
    with LF or CRLF. A line over MAX_LINE is skipped through, not held: it comes
    as MAX_LINE + 1 bytes of itself, enough for the caller to see it is too long."""
    number = 0
    while line := source.readline(MAX_LINE + 3):
        number += 1
        if not line.endswith(b"\n") and len(line) == MAX_LINE + 3:
            while (rest := source.readline(1 << 16)) and not rest.endswith(b"\n"):
                pass  # the rest of a line too long to send
            line = line[: MAX_LINE + 1]
        line = line.removesuffix(b"\n").removesuffix(b"\r")
        if number == 1:
            line = line.removeprefix(BOM)
        if line.strip():
            yield number, line


def is_array(source: BinaryIO) -> bool:
    """Whether the file starts (after a BOM and whitespace) with ``[``; leaves it at its start."""
    head = source.read(len(BOM)).removeprefix(BOM)
    while head.isspace() or not head:
        more = source.read(1 << 16)
        if not more:
            break
        head = more.lstrip()
    source.seek(0)
    return head.lstrip()[:1] == b"["


def read_entries(source: BinaryIO, path: str) -> tuple[Iterable[Entry], str]:
    """The file's items, as they are read, and what numbers them (``line``, or
    ``item`` in a JSON array).

    Raises ValueError for a file that starts like a JSON array and is not one,
    or one over MAX_ARRAY.
    """
    if not is_array(source):
        return (entry(path, n, line) for n, line in read_lines(source)), "line"
    data = source.read(MAX_ARRAY + 1)
    if len(data) > MAX_ARRAY:
        raise ValueError(f"a JSON array over {MAX_ARRAY >> 20} MiB: send it as JSONL")
    try:
        elements = orjson.loads(data.removeprefix(BOM))
    except orjson.JSONDecodeError as err:
        raise ValueError(f"not a JSON array: {err.msg}") from None
    raws = [(n, orjson.dumps(e)) for n, e in enumerate(elements, 1)]
    return [entry(path, n, raw) for n, raw in raws], "item"


def count_entries(source: BinaryIO) -> int:
    """How many items a JSONL file holds (a pass of its own); leaves it at its start."""
    count = sum(1 for _ in read_lines(source))
    source.seek(0)
    return count


class Abort(Exception):
    """Stop the batch: retrying the next lines cannot help."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class BatchResult:
    published: int = 0
    repeated: int = 0
    invalid: list[int] = field(default_factory=list)
    unit: str = "line"

    @property
    def done(self) -> int:
        return self.published + self.repeated + len(self.invalid)

    def summary(self, total: int) -> str:
        text = f"{total} items: {self.published} published, {self.repeated} already published"
        if self.invalid:
            lines = ", ".join(map(str, self.invalid[:10])) + (", ..." * (len(self.invalid) > 10))
            text += f", {len(self.invalid)} invalid ({self.unit} {lines})"
        return text


def publish_file(api: Api, path: str) -> int:
    """Publish a JSONL file or a JSON array in batches; report invalid items and a summary.

    A JSONL file is read as it is sent, a batch at a time, so a file of any
    size costs the memory of about one batch.
    """
    try:
        with open_source(path) as source:
            entries, unit = read_entries(source, path)
            return _publish_entries(api, entries, BatchResult(unit=unit), _progress(source, unit))
    except OSError as err:
        print(f"wire publish: cannot read {path}: {err.strerror or err}", file=sys.stderr)
        return 2
    except ValueError as err:
        print(f"wire publish: {path}: {err}", file=sys.stderr)
        return 2


def _progress(source: BinaryIO, unit: str) -> Progress:
    """A progress bar on a terminal, which needs the item count (a pass over the file)."""
    if not sys.stderr.isatty() or unit != "line":
        return Progress(0, sys.stderr)
    return Progress(count_entries(source), sys.stderr)


def _publish_entries(api: Api, entries: Iterable[Entry], result: BatchResult, bar: Progress) -> int:
    try:
        for chunk in batches(entries):
            for entry, (status, answer) in zip(chunk, _post_batch(api, chunk), strict=True):
                _count(result, bar, entry, status, answer)
            bar.update(result.done)
    except Abort as stop:
        bar.finish()
        print(f"wire publish: {stop}", file=sys.stderr)
        print(f"wire publish: stopped after {result.summary(result.done)}", file=sys.stderr)
        return stop.code
    bar.finish()
    print(f"wire publish: {result.summary(result.done)}", file=sys.stderr)
    return 1 if result.invalid else 0


def _count(
    result: BatchResult, bar: Progress, entry: Entry, status: int, answer: dict[str, Any]
) -> None:
    """Add one item's outcome to the result; say why when it was refused."""
    if status in (201, 202):
        result.published += 1
    elif status < 300:
        result.repeated += 1
    else:
        result.invalid.append(entry.number)
        bar.say(f"wire publish: {result.unit} {entry.number}: {describe_error(status, answer)}")


def batches(entries: Iterable[Entry]) -> Iterator[list[Entry]]:
    """Consecutive runs of at most BATCH_ITEMS items and about BATCH_BYTES bytes."""
    chunk: list[Entry] = []
    size = 0
    for entry in entries:
        if chunk and (len(chunk) == BATCH_ITEMS or size + len(entry.raw) > BATCH_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append(entry)
        size += len(entry.raw)
    if chunk:
        yield chunk


def _post_batch(api: Api, chunk: list[Entry]) -> list[tuple[int, dict[str, Any]]]:
    """Every item's (status, answer); what a retry can fix is retried, the rest raise Abort.

    Every item carries its key, so sending a batch (or some of its items)
    again stores nothing twice.
    """
    outcomes: dict[int, tuple[int, dict[str, Any]]] = {}
    too_long = {"error": {"code": "payload_too_large", "message": f"over {MAX_LINE:,} bytes"}}
    for i, entry in enumerate(chunk):
        if entry.oversize:
            outcomes[i] = (413, too_long)
    todo = [i for i in range(len(chunk)) if i not in outcomes]
    delays = iter(RETRY_DELAYS)
    while todo:
        status, answers = _send_batch(api, [chunk[i].line() for i in todo])
        if status == 200 and len(answers) == len(todo):
            for i, answer in zip(todo, answers, strict=True):
                outcomes[i] = (int(answer.get("status", 0)), answer)
            todo = [i for i in todo if not _final(outcomes[i][0])]
            if not todo:
                break
            status, answers = outcomes[todo[0]][0], [outcomes[todo[0]][1]]
        elif status in (401, 403) or (status and not _retry(status)):
            raise Abort(describe_error(status, answers[0]), 1)
        delay = next(delays, None)
        if delay is None:
            why = describe_error(status, answers[0]) if status else f"cannot reach {api.base}"
            raise Abort(f"{why}; run the same command again to go on (nothing is stored twice)", 3)
        time.sleep(delay)
    return [outcomes[i] for i in range(len(chunk))]


def _retry(status: int) -> bool:
    """A status a later attempt may turn into success."""
    return status >= 500 or status == 429


def _final(status: int) -> bool:
    """An item's status that another attempt would not change."""
    return bool(status) and not _retry(status)


def _send_batch(api: Api, lines: list[bytes]) -> tuple[int, list[dict[str, Any]]]:
    """POST the lines; the status and the per-item answers (one error answer when not 200)."""
    try:
        status, data = api.post_batch(lines)
    except UNREACHABLE as err:
        return 0, [{"error": {"code": "unreachable", "message": str(err)}}]
    if status != 200:
        return status, [answer_of(status, data)]
    try:
        return status, [orjson.loads(line) for line in data.splitlines() if line.strip()]
    except orjson.JSONDecodeError:
        return 502, [answer_of(502, data)]


class Progress:
    """A plain-text progress bar on a terminal; silent when output is not one."""

    WIDTH = 30

    def __init__(self, total: int, stream: TextIO, *, clock: Callable[[], float] = time.monotonic):
        self.total = total
        self.stream = stream
        self.enabled = total >= PROGRESS_FROM and stream.isatty()
        self.clock = clock
        self._shown = 0.0
        self._last = ""

    def update(self, done: int) -> None:
        if not self.enabled or (self.clock() - self._shown < 0.1 and done < self.total):
            return
        self._shown = self.clock()
        filled = self.WIDTH * done // max(self.total, 1)
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        self._last = f"[{bar}] {done}/{self.total} {100 * done // max(self.total, 1)}%"
        self.stream.write("\r" + self._last)
        self.stream.flush()

    def say(self, message: str) -> None:
        """Print a line without tearing the bar."""
        self._clear()
        print(message, file=self.stream, flush=True)
        if self._last:
            self.stream.write(self._last)
            self.stream.flush()

    def finish(self) -> None:
        self._clear()
        self._last = ""

    def _clear(self) -> None:
        if self.enabled and self._last:
            self.stream.write("\r" + " " * len(self._last) + "\r")
            self.stream.flush()
