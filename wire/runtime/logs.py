"""Structured logs: one JSON object per line, never tokens or item bodies."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from typing import TextIO

import orjson
from aiohttp.http_exceptions import HttpProcessingError

_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message"}


class JSONFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "msg", ...extra}`` on one line."""

    #: The last second formatted, and its text: a busy wire logs many lines a second.
    _second: tuple[int, str] = (-1, "")

    def timestamp(self, record: logging.LogRecord) -> str:
        """``2026-12-05T03:39:58.589Z`` (UTC, milliseconds)."""
        second = int(record.created)
        if self._second[0] != second:
            self._second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
        return f"{self._second[1]}.{int(record.msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, object] = {
            "ts": self.timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                event[key] = value
        if record.exc_info:
            event["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(event, default=str).decode()


class TurnBatchedHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes the lines of one event-loop turn together, in one write.

    A busy publisher logs a line per request; written one by one, the write
    and flush cost more than the line (about a fifth of a small ``POST``).
    Lines below WARNING wait for the end of the loop's turn (or 64 KiB);
    a warning or worse, a line logged outside the event loop's thread and the
    handler's flush at exit write everything pending at once, in order, so
    a crash's last words are never held back.
    """

    LIMIT = 64 * 1024

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self.pending: list[str] = []
        self.size = 0

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + self.terminator
        except Exception:
            self.handleError(record)
            return
        self.pending.append(line)
        self.size += len(line)
        if record.levelno >= logging.WARNING or self.size >= self.LIMIT:
            self.write_pending()
        elif len(self.pending) == 1:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:  # no loop in this thread: nobody would call back
                self.write_pending()

    def flush(self) -> None:
        self.acquire()
        try:
            self.write_pending()
            super().flush()
        finally:
            self.release()

    def write_pending(self) -> None:
        """Write what is pending (the caller holds the handler's lock, or is the loop)."""
        if not self.pending:
            return
        text, self.pending, self.size = "".join(self.pending), [], 0
        try:
            self.stream.write(text)
            self.stream.flush()
        except Exception:  # a closed or broken stderr must not break a request
            self.handleError(logging.makeLogRecord({"msg": "log write failed"}))


def setup_logging(level: str) -> None:
    """Send JSON lines to stderr at ``level``; quiet aiohttp's access log."""
    # What the JSON lines never show need not be gathered for every record
    # (the logging HOWTO's "Optimization"): the caller's frame, thread and
    # process names.
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    handler = TurnBatchedHandler(sys.stderr)
    handler.setFormatter(JSONFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    server = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, UnparsableRequest) for f in server.filters):
        server.addFilter(UnparsableRequest())


class UnparsableRequest(logging.Filter):
    """A request aiohttp cannot parse (line too long, bad header...) is the client's
    mistake, answered 400; aiohttp logs it as an error with a traceback that quotes
    the raw request line, which may carry a ``?token=``. Keep one warning, no bytes."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg = "unparsable request answered %s: %s"
            record.args = (exc.code, type(exc).__name__)
            record.exc_info = record.exc_text = None
        return True
