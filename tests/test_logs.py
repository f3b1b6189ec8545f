"""Structured logs: JSON lines, written once per event-loop turn, never held back
past a warning or the process's exit."""

from __future__ import annotations

import asyncio
import io
import logging
import subprocess
import sys
from collections.abc import Iterator

import orjson
import pytest

from wire.runtime.logs import JSONFormatter, TurnBatchedHandler


@pytest.fixture
def logged() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = TurnBatchedHandler(stream)
    handler.setFormatter(JSONFormatter())
    logger = logging.getLogger("wire.test.logs")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    yield logger, stream
    logger.handlers.clear()


def messages(stream: io.StringIO) -> list[str]:
    return [orjson.loads(line)["msg"] for line in stream.getvalue().splitlines()]


def test_a_turns_lines_are_written_together_after_the_turn(
    logged: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = logged

    async def turn() -> tuple[list[str], list[str]]:
        logger.info("one")
        logger.info("two", extra={"status": 200})
        during = messages(stream)
        await asyncio.sleep(0)
        return during, messages(stream)

    during, after = asyncio.run(turn())
    assert during == []
    assert after == ["one", "two"]
    assert orjson.loads(stream.getvalue().splitlines()[1])["status"] == 200


def test_a_warning_writes_everything_pending_at_once_in_order(
    logged: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = logged

    async def turn() -> list[str]:
        logger.info("before")
        logger.warning("trouble")
        return messages(stream)

    assert asyncio.run(turn()) == ["before", "trouble"]


def test_outside_an_event_loop_a_line_is_written_at_once(
    logged: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = logged
    logger.info("no loop here")
    assert messages(stream) == ["no loop here"]


def test_a_turn_that_logs_a_lot_writes_before_its_end(
    logged: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = logged

    async def turn() -> int:
        for n in range(2000):
            logger.info("line %d", n)
        return len(messages(stream))

    written_in_turn = asyncio.run(turn())
    # Bounded: at most 64 KiB waits, so most of 2,000 lines are out already.
    assert 1000 < written_in_turn < 2000
    assert messages(stream) == [f"line {n}" for n in range(2000)]


@pytest.mark.parametrize("ending", ["return", "os._exit after a warning"])
def test_the_last_lines_reach_stderr_when_the_process_ends(ending: str) -> None:
    exit_call = "logging.getLogger('x').warning('last words'); os._exit(3)"
    script = f"""
import asyncio, logging, os
from wire.runtime.logs import setup_logging
setup_logging("INFO")
async def main():
    logging.getLogger("x").info("pending at the end")
    {exit_call if ending != "return" else "pass"}
asyncio.run(main())
"""
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30
    )
    lines = [orjson.loads(line)["msg"] for line in proc.stderr.splitlines()]
    if ending == "return":
        assert proc.returncode == 0 and lines == ["pending at the end"]
    else:
        assert proc.returncode == 3 and lines == ["pending at the end", "last words"]


def test_timestamps_are_utc_with_milliseconds_across_seconds() -> None:
    formatter = JSONFormatter()
    stamps = []
    for created in (1796441998.5899, 1796441998.9, 1796441999.0015):
        record = logging.makeLogRecord({"msg": "m", "created": created})
        record.msecs = (created - int(created)) * 1000
        stamps.append(orjson.loads(formatter.format(record))["ts"])
    assert stamps == [
        "2026-12-05T03:39:58.589Z",
        "2026-12-05T03:39:58.900Z",
        "2026-12-05T03:39:59.001Z",
    ]
