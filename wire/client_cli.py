"""Client-side commands: ``wire publish`` (and the others added by later modules)."""

from __future__ import annotations

import argparse
import os
import sys
import urllib.error
import urllib.request
import uuid
from typing import Any

import orjson

DEFAULT_URL = "http://127.0.0.1:8080"


def add_commands(sub: Any) -> None:
    """Register the client subcommands on the ``wire`` parser."""
    pub = sub.add_parser("publish", help="publish an item through the HTTP API (token: WIRE_TOKEN)")
    pub.add_argument("--url", default=os.environ.get("WIRE_URL", DEFAULT_URL))
    pub.add_argument("--title", required=True)
    pub.add_argument(
        "--tag", action="append", dest="tags", required=True, help="a tag; repeat for more"
    )
    pub.add_argument("--subtitle")
    pub.add_argument("--body")
    pub.add_argument("--mark")
    pub.add_argument("--link", "--item-url", dest="link", help="link to the full story")
    pub.add_argument("--urgency", type=int)
    pub.add_argument("--guid")
    pub.set_defaults(handler=publish_command)


def post_item(
    base: str, token: str, item: dict[str, Any], *, key: str | None = None
) -> tuple[int, dict[str, Any]]:
    """POST one item; return the status and decoded JSON answer."""
    req = urllib.request.Request(
        base.rstrip("/") + "/v1/items",
        data=orjson.dumps(item),
        method="POST",
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            "Idempotency-Key": key or str(uuid.uuid4()),
        },
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, orjson.loads(resp.read())
    except urllib.error.HTTPError as err:
        body = err.read()
        try:
            return err.code, orjson.loads(body)
        except orjson.JSONDecodeError:
            return err.code, {"error": {"code": "http_error", "message": body.decode()[:200]}}


def publish_command(args: argparse.Namespace) -> int:
    token = os.environ.get("WIRE_TOKEN")
    if not token:
        print("wire publish: set WIRE_TOKEN to an editor token", file=sys.stderr)
        return 2
    item = {
        k: v
        for k, v in {
            "title": args.title,
            "tags": args.tags,
            "subtitle": args.subtitle,
            "body": args.body,
            "mark": args.mark,
            "url": args.link,
            "urgency": args.urgency,
            "guid": args.guid,
        }.items()
        if v is not None
    }
    try:
        status, answer = post_item(args.url, token, item)
    except (urllib.error.URLError, OSError) as err:
        print(f"wire publish: cannot reach {args.url}: {err}", file=sys.stderr)
        return 3
    if status >= 400:
        error = answer.get("error", {})
        where = f" ({error['field']})" if error.get("field") else ""
        print(
            f"wire publish: {status} {error.get('code')}{where}: {error.get('message')}",
            file=sys.stderr,
        )
        return 1
    print(orjson.dumps(answer["item"]).decode())
    return 0
