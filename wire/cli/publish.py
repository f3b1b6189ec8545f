"""``wire publish``: one item from flags, or a JSONL batch that is safe to run again."""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import orjson

from wire.cli.client import (
    UNREACHABLE,
    Api,
    add_url_flag,
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
        help="publish every line of a JSONL file (- for stdin); safe to run again",
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


def read_lines(path: str) -> list[tuple[int, bytes]]:
    """The non-blank lines of a file (or stdin for ``-``) with their 1-based numbers."""
    data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    data = data.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 BOM some editors write
    return [(n, line) for n, line in enumerate(data.splitlines(), 1) if line.strip()]


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

    @property
    def done(self) -> int:
        return self.published + self.repeated + len(self.invalid)

    def summary(self, total: int) -> str:
        text = f"{total} items: {self.published} published, {self.repeated} already published"
        if self.invalid:
            lines = ", ".join(map(str, self.invalid[:10])) + (", ..." * (len(self.invalid) > 10))
            text += f", {len(self.invalid)} invalid (line {lines})"
        return text


def publish_file(api: Api, path: str) -> int:
    """Publish each line of a JSONL file; report invalid lines and a summary."""
    try:
        lines = read_lines(path)
    except OSError as err:
        print(f"wire publish: cannot read {path}: {err.strerror or err}", file=sys.stderr)
        return 2
    result = BatchResult()
    bar = Progress(len(lines), sys.stderr)
    try:
        for lineno, line in lines:
            status, answer = _post_line(api, line, line_key(path, lineno, line))
            if status == 201:
                result.published += 1
            elif status < 300:
                result.repeated += 1
            else:
                result.invalid.append(lineno)
                bar.say(f"wire publish: line {lineno}: {describe_error(status, answer)}")
            bar.update(result.done)
    except Abort as stop:
        bar.finish()
        print(f"wire publish: {stop}", file=sys.stderr)
        print(f"wire publish: stopped after {result.summary(len(lines))}", file=sys.stderr)
        return stop.code
    bar.finish()
    print(f"wire publish: {result.summary(len(lines))}", file=sys.stderr)
    return 1 if result.invalid else 0


def _post_line(api: Api, line: bytes, key: str) -> tuple[int, dict[str, Any]]:
    """Post one line, retrying what a retry can fix; raise Abort for the rest."""
    delays = iter(RETRY_DELAYS)
    while True:
        try:
            status, answer = api.post_item(line, key)
        except UNREACHABLE as err:
            status, answer = 0, {"error": {"code": "unreachable", "message": str(err)}}
        if status in (401, 403):
            raise Abort(describe_error(status, answer), 1)
        if status and status < 500 and status != 429:
            return status, answer
        delay = next(delays, None)
        if delay is None:
            why = describe_error(status, answer) if status else f"cannot reach {api.base}"
            raise Abort(f"{why}; run the same command again to go on (nothing is stored twice)", 3)
        time.sleep(delay)


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
