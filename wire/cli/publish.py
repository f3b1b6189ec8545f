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
    pub.set_defaults(handler=publish_command, usage=pub.error)


def publish_command(args: argparse.Namespace) -> int:
    """``wire publish``: one item from flags, or a batch with ``--file``."""
    if args.file is not None and (args.title is not None or args.tags):
        args.usage("--file publishes the items in the file; leave out --title and --tag")
    if args.file is None and (args.title is None or not args.tags):
        args.usage("give --title and at least one --tag, or --file")
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
    fields = {
        "title": args.title,
        "tags": args.tags,
        "subtitle": args.subtitle,
        "body": args.body,
        "mark": args.mark,
        "url": args.link,
        "urgency": args.urgency,
        "guid": args.guid,
    }
    item = {k: v for k, v in fields.items() if v is not None}
    code, stored = post_reporting(api, item, "wire publish")
    if stored is not None:
        print(orjson.dumps(stored).decode())
    return code


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
