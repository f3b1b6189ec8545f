"""``wire tail``: print live items as they arrive, as lines or as JSON for ``jq``.

Built on the subscriber library, so it reconnects and resumes by itself;
connection news goes to stderr and never mixes with the items on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections import OrderedDict
from typing import Any, TextIO

import orjson

import subscriber
from subscriber import Disconnected, HistoryTruncated, Item, Notice, Subscribed, Withdrawal
from wire.cli.client import add_url_flag

REMEMBERED_TITLES = 10_000
BOLD_RED, YELLOW, DIM, RESET = "\x1b[1;31m", "\x1b[33m", "\x1b[2m", "\x1b[0m"


def add_command(sub: Any) -> None:
    """Register ``wire tail``."""
    tail = sub.add_parser("tail", help="print live items as they arrive (Ctrl-C to stop)")
    add_url_flag(tail, websocket=True)
    tail.add_argument("--tags", required=True, help="comma-separated tags; * for everything")
    tail.add_argument("--since", metavar="ID", help="start after this item id (replays history)")
    tail.add_argument("--json", action="store_true", help="one JSON object per line, for jq")
    tail.add_argument("--token", help="subscriber token (default: $WIRE_SUBSCRIBER_TOKEN)")
    tail.set_defaults(handler=tail_command)


def tail_command(args: argparse.Namespace) -> int:
    """Run until Ctrl-C (exit 130), a refusal (1) or a closed stdout (0)."""
    tags = [t for t in args.tags.split(",") if t.strip()]
    token = args.token or os.environ.get("WIRE_SUBSCRIBER_TOKEN") or None
    printer = Printer(sys.stdout, as_json=args.json, color=wants_color(sys.stdout))
    try:
        feed = subscriber.connect(
            args.url, tags, token=token, since=args.since, on_notice=NoticePrinter(sys.stderr)
        )
    except (ValueError, subscriber.SubscriptionError) as err:  # bad URL, --since or tag
        _note(str(err))
        return 2
    try:
        return asyncio.run(_tail(feed, printer))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (``| head``): point stdout at /dev/null so the
        # interpreter's last flush does not complain, and stop quietly.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


async def _tail(feed: subscriber.Feed, printer: Printer) -> int:
    try:
        async with feed:
            shown = ", ".join(feed.tags) or "nothing"
            _note(f"watching {shown} at {feed.url} (Ctrl-C to stop)")
            async for event in feed:
                printer.show(event)
    except subscriber.SubscriberError as err:
        _note(f"{feed.url}: {err}")
        return 1
    return 0


def _note(message: str, stream: TextIO | None = None) -> None:
    print(f"wire tail: {message}", file=stream or sys.stderr, flush=True)


def wants_color(stream: TextIO) -> bool:
    """ANSI styles on a terminal, unless NO_COLOR is set or the terminal is dumb."""
    return (
        stream.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM", "") != "dumb"
    )


class NoticePrinter:
    """Connection news on stderr: lost, back, history gap."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.lost = False

    def __call__(self, notice: Notice) -> None:
        if isinstance(notice, Disconnected):
            why = f"{notice.code} {notice.reason}" if notice.code else notice.reason
            _note(f"not connected ({why}); retrying in {notice.retry_in:.1f}s", self.stream)
            self.lost = True
        elif isinstance(notice, Subscribed) and self.lost:
            after = f" after {notice.since}" if notice.since else ""
            _note(f"reconnected; resuming{after}", self.stream)
            self.lost = False
        elif isinstance(notice, HistoryTruncated):
            _note(f"warning: {notice.message}", self.stream)


class Printer:
    """Items on stdout: a line each (``HH:MM ! MARK  Title (v2)  [tags]``) or raw JSON."""

    def __init__(self, stream: TextIO, *, as_json: bool = False, color: bool = False) -> None:
        self.stream = stream
        self.as_json = as_json
        self.color = color
        # Withdrawals carry no title; the line names the story by the title
        # this tail last showed for it.
        self.titles: OrderedDict[str, str] = OrderedDict()

    def show(self, event: Item | Withdrawal) -> None:
        if self.as_json:
            line = orjson.dumps(event.raw).decode()
        elif isinstance(event, Withdrawal):
            line = self.withdrawal_line(event)
        else:
            line = self.item_line(event)
        self.stream.write(line + "\n")
        self.stream.flush()  # a pipe is block-buffered; jq should see each item now

    def item_line(self, item: Item) -> str:
        self._remember(item.guid, item.title)
        when = item.published_at.astimezone().strftime("%H:%M")
        urgent = item.urgency <= 2
        mark = f"{clean(item.mark).upper()}  " if item.mark else ""
        version = f" (v{item.version})" if item.is_update else ""
        text = self._paint(f"{mark}{clean(item.title)}{version}", BOLD_RED if urgent else "")
        return f"{self._paint(when, DIM)} {'!' if urgent else ' '} {text}  {_tags(item.tags)}"

    def withdrawal_line(self, kill: Withdrawal) -> str:
        stamp = kill.published_at.astimezone().strftime("%H:%M") if kill.published_at else "--:--"
        title = self.titles.get(kill.guid) or kill.guid
        reason = f": {clean(kill.reason)}" if kill.reason else ""
        text = self._paint(f"WITHDRAWN  {clean(title)} (v{kill.version}){reason}", YELLOW)
        return f"{self._paint(stamp, DIM)} x {text}  {_tags(kill.tags)}"

    def _remember(self, guid: str, title: str) -> None:
        self.titles[guid] = title
        self.titles.move_to_end(guid)
        if len(self.titles) > REMEMBERED_TITLES:
            self.titles.popitem(last=False)

    def _paint(self, text: str, style: str) -> str:
        return f"{style}{text}{RESET}" if self.color and style else text


def clean(text: str) -> str:
    """Text safe to print on a terminal: control characters (escapes!) become spaces."""
    return "".join(ch if ch.isprintable() else " " for ch in text)


def _tags(tags: tuple[str, ...]) -> str:
    return "[" + ", ".join(clean(t) for t in tags) + "]"
