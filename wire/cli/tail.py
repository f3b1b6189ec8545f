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
BOLD_RED, YELLOW, CYAN, DIM, RESET = "\x1b[1;31m", "\x1b[33m", "\x1b[36m", "\x1b[2m", "\x1b[0m"
#: The credit in a dateline: ``TOKYO, Dec 3 (WIRE) -``.
AGENCY = "WIRE"


def add_command(sub: Any) -> None:
    """Register ``wire tail``."""
    tail = sub.add_parser("tail", help="print live items as they arrive (Ctrl-C to stop)")
    add_url_flag(tail, websocket=True)
    tail.add_argument("--tags", required=True, help="comma-separated tags; * for everything")
    tail.add_argument(
        "--lang", help="comma-separated language tags, e.g. en,ru (default: every language)"
    )
    tail.add_argument("--since", metavar="ID", help="start after this item id (replays history)")
    tail.add_argument("--json", action="store_true", help="one JSON object per line, for jq")
    tail.add_argument("--token", help="subscriber token (default: $WIRE_SUBSCRIBER_TOKEN)")
    tail.set_defaults(handler=tail_command, usage=tail.error)


def tail_command(args: argparse.Namespace) -> int:
    """Run until Ctrl-C (exit 130), a refusal (1) or a closed stdout (0); 2 for bad
    arguments. A tail of no tag would print nothing, ever: that is a usage error."""
    tags = [t for t in args.tags.split(",") if t.strip()]
    if not tags:
        args.usage("--tags: give at least one tag (* for everything)")
    languages = [t.strip() for t in (args.lang or "").split(",") if t.strip()]
    token = args.token or os.environ.get("WIRE_SUBSCRIBER_TOKEN") or None
    printer = Printer(sys.stdout, as_json=args.json, color=wants_color(sys.stdout))
    try:
        feed = subscriber.connect(
            args.url,
            tags,
            token=token,
            languages=languages,
            since=args.since,
            on_notice=NoticePrinter(sys.stderr),
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
    """Items on stdout, a line each, or raw JSON.

    ``HH:MM ! MARK  TOKYO, Dec 3 (WIRE) - Title (v2)  By Jane Doe  [tags]``:
    the dateline when the item has a place, the byline when it has one; a
    correction says ``CORRECTED`` and an advisory starts ``[ADVISORY]``
    (dim on a terminal), so neither passes for an ordinary update.
    """

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
        version = f" (v{item.version})" if item.is_update else ""
        headline = f"{_marks(item)}{dateline(item)}{clean(item.title)}{version}"
        text = self._paint(headline, _style(item))
        byline = f"  {by(item.byline)}" if item.byline else ""
        flag = "!" if urgent else " "
        return f"{self._paint(when, DIM)} {flag} {text}{byline}  {_tags(item.tags)}"

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


def _marks(item: Item) -> str:
    advisory = "[ADVISORY] " if item.is_advisory else ""
    mark = clean(item.mark).upper() if item.mark else ""
    # A correction always says so, even when the editor set another mark.
    if item.correction and mark != "CORRECTED":
        mark = f"CORRECTED {mark}".strip()
    return advisory + (f"{mark}  " if mark else "")


def _style(item: Item) -> str:
    if item.is_advisory:
        return DIM
    if item.urgency <= 2:
        return BOLD_RED
    return CYAN if item.correction else ""


def dateline(item: Item) -> str:
    """``TOKYO, Dec 3 (WIRE) - ``: the place in capitals and the day, in agency style.

    The day is the viewer's local date of publication, like the time beside it.
    """
    if not item.located:
        return ""
    day = item.published_at.astimezone()
    return f"{clean(item.located).upper()}, {_MONTHS[day.month - 1]} {day.day} ({AGENCY}) - "


#: English month abbreviations, independent of the process locale.
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def by(byline: str) -> str:
    """``By Jane Doe``, without doubling a ``By`` the byline already has."""
    text = clean(byline).strip()
    return text if text.casefold().startswith("by ") else f"By {text}"


def clean(text: str) -> str:
    """Text safe to print on a terminal: control characters (escapes!) become spaces."""
    return "".join(ch if ch.isprintable() else " " for ch in text)


def _tags(tags: tuple[str, ...]) -> str:
    return "[" + ", ".join(clean(t) for t in tags) + "]"
