"""``wire ledger GUID``: who received a story, as a table (the admins' deliveries read).

Reads ``GET /v1/stories/<guid>/deliveries`` with an admin token (``--token``,
else ``$WIRE_ADMIN_TOKEN``, else ``$WIRE_TOKEN``) and prints one row per
partner and channel: versions received, first and last time, and whether
the withdrawal reached it (``-`` for a story that is not withdrawn).
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from typing import Any

import orjson

from wire.cli.client import UNREACHABLE, add_url_flag, answer_of, describe_error

HEADER = ("PARTNER", "CHANNEL", "VERSIONS", "FIRST", "LAST", "WITHDRAWAL REACHED")


def add_command(sub: Any) -> None:
    """Register ``wire ledger`` on the ``wire`` parser."""
    p = sub.add_parser(
        "ledger",
        help="who received a story, by partner and channel "
        "(admin token: --token, $WIRE_ADMIN_TOKEN or $WIRE_TOKEN)",
    )
    p.add_argument("guid", help="the story's guid")
    add_url_flag(p)
    p.add_argument("--token", help="admin token (default: $WIRE_ADMIN_TOKEN, else $WIRE_TOKEN)")
    p.set_defaults(handler=ledger_command)


def ledger_command(args: argparse.Namespace) -> int:
    """Print the table; 1 when the server refuses, 3 when it cannot be reached."""
    token = args.token or os.environ.get("WIRE_ADMIN_TOKEN") or os.environ.get("WIRE_TOKEN")
    url = f"{args.url.rstrip('/')}/v1/stories/{urllib.parse.quote(args.guid, safe='')}/deliveries"
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            story = orjson.loads(resp.read())["story"]
    except urllib.error.HTTPError as err:
        print(f"wire ledger: {describe_error(err.code, answer_of(err.code, err.read()))}",
              file=sys.stderr)
        return 1
    except UNREACHABLE as err:
        print(f"wire ledger: cannot reach {args.url}: {err}", file=sys.stderr)
        return 3
    print(render(story), end="")
    return 0


def _cell(value: object) -> str:
    """A value as one table cell: control characters escaped, so a partner
    name can neither break a row nor send escape codes to the terminal."""
    text = str(value)
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def rows(story: dict[str, Any]) -> list[tuple[str, ...]]:
    """The table's rows (header first) of a deliveries answer."""
    out: list[tuple[str, ...]] = [HEADER]
    for d in story["deliveries"]:
        reached = d["withdrawal_reached"]
        out.append((
            _cell(d["partner"]),
            _cell(d["channel"]),
            ",".join(str(v) for v in d["versions"]) or "-",
            d["first"],
            d["last"],
            "-" if reached is None else ("yes" if reached else "no"),
        ))
    return out


def render(story: dict[str, Any]) -> str:
    """The whole printout: the table, then the anonymous count."""
    table = rows(story)
    widths = [max(len(r[i]) for r in table) for i in range(len(HEADER))]
    lines = [_line(r, widths) for r in table]
    state = "withdrawn" if story["withdrawn"] else "not withdrawn"
    lines.append(f"story {_cell(story['guid'])} ({state}); "
                 f"anonymous live deliveries: {story['anonymous']}")
    return "\n".join(lines) + "\n"


def _line(row: Sequence[str], widths: Sequence[int]) -> str:
    return "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
