"""What every client-side command shares: the ``--url`` flag, the HTTP API client, errors.

``wire publish``, ``tail``, ``demo`` and ``export`` talk to a running wire over
its public HTTP and WebSocket APIs only, with the standard library's HTTP
client (and the subscriber library for ``tail``), so they work against any
deployment.
"""

from __future__ import annotations

import argparse
import http.client
import os
import sys
import uuid
from typing import Any
from urllib.parse import urlsplit

import orjson

DEFAULT_URL = "http://127.0.0.1:8080"
NDJSON = "application/x-ndjson"
#: Failures after which the same request may succeed: network trouble and a
#: server that is restarting or overloaded.
UNREACHABLE = (OSError, http.client.HTTPException)


def add_url_flag(parser: Any, *, websocket: bool = False) -> None:
    """The ``--url`` flag, defined once: ``$WIRE_URL`` or the local default."""
    what = "base URL or its ws://.../v1/ws" if websocket else "base URL"
    parser.add_argument(
        "--url",
        default=os.environ.get("WIRE_URL", DEFAULT_URL),
        help=f"the wire's {what} (default: $WIRE_URL or {DEFAULT_URL})",
    )


def editor_token(args: argparse.Namespace) -> str | None:
    """``--token``, else ``$WIRE_TOKEN``."""
    return getattr(args, "token", None) or os.environ.get("WIRE_TOKEN") or None


class Api:
    """``POST /v1/items`` over one kept-alive HTTP connection.

    Every request carries an Idempotency-Key, which is what makes it safe to
    send a request again on a fresh connection when the old one was closed
    under it.
    """

    def __init__(self, base: str, token: str, *, timeout: float = 30.0) -> None:
        parts = urlsplit(base)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base!r}")
        self.base = base
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._path = parts.path.rstrip("/") + "/v1/items"
        self._token = token
        self._timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    def post_item(self, body: bytes, key: str) -> tuple[int, dict[str, Any]]:
        """POST one item's JSON; return the status and the decoded answer."""
        try:
            return self._post(body, key)
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            self.close()  # the server closed the idle connection: once more, afresh
            return self._post(body, key)

    def post_batch(self, lines: list[bytes]) -> tuple[int, bytes]:
        """POST an ndjson batch (each line carries its own ``idempotency_key``);
        return the status and the raw answer (ndjson when 200)."""
        body = b"\n".join(lines) + b"\n"
        headers = {"Authorization": f"Bearer {self._token}", "Content-Type": NDJSON}
        try:
            return self._send(body, headers)
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            self.close()  # the server closed the idle connection: once more, afresh
            return self._send(body, headers)

    def _post(self, body: bytes, key: str) -> tuple[int, dict[str, Any]]:
        status, data = self._send(body, self._headers(key))
        return status, answer_of(status, data)

    def _send(self, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        conn = self._connection()
        try:
            conn.request("POST", self._path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        except BaseException:
            self.close()
            raise
        return resp.status, data

    def _headers(self, key: str) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self._token}",
            "Content-Type": "application/json",
            "Idempotency-Key": key,
        }

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            kind = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            self._conn = kind(self._host, self._port, timeout=self._timeout)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def api_for(args: argparse.Namespace, token: str) -> Api:
    """The API client for ``--url``; a malformed URL is a usage error (exit 2)."""
    try:
        return Api(args.url, token)
    except ValueError as err:
        args.usage(f"--url: {err}")
        raise  # usage() exits; this is for the type checker


def answer_of(status: int, data: bytes) -> dict[str, Any]:
    """An API answer as a dict; a body that is not a JSON object becomes an error answer."""
    try:
        answer = orjson.loads(data)
    except orjson.JSONDecodeError:
        answer = None
    if isinstance(answer, dict):
        return answer
    return {"error": {"code": "http_error", "message": f"HTTP {status}: {data[:200]!r}"}}


def describe_error(status: int, answer: dict[str, Any]) -> str:
    """``422 invalid_field (urgency): urgency must be ...`` from an API error answer."""
    error = answer.get("error") or {}
    where = f" ({error['field']})" if error.get("field") else ""
    return f"{status} {error.get('code')}{where}: {error.get('message')}"


def post_reporting(api: Api, item: dict[str, Any], prog: str) -> tuple[int, dict[str, Any] | None]:
    """POST one item with a fresh Idempotency-Key; on failure say why on stderr.

    Returns the exit code for a command that stops here (0, 1 rejected,
    3 unreachable) and the stored item when it was accepted.
    """
    try:
        status, answer = api.post_item(orjson.dumps(item), str(uuid.uuid4()))
    except UNREACHABLE as err:
        print(f"{prog}: cannot reach {api.base}: {err}", file=sys.stderr)
        return 3, None
    if status >= 400:
        print(f"{prog}: {describe_error(status, answer)}", file=sys.stderr)
        return 1, None
    return 0, answer["item"]
