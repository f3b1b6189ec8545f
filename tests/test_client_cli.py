"""``wire tail``, ``wire publish --file`` and ``wire demo`` as real child processes.

The server runs in the test's event loop, so the children are driven with
asyncio subprocesses: a blocking wait would stop the server they talk to.
"""

from __future__ import annotations

import asyncio
import io
import os
import pty
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from subscriber import Item, Withdrawal
from tests.conftest import Server
from tests.support import EDITOR_TOKEN, ROOT, get_json, publish
from wire.cli.main import main
from wire.cli.tail import Printer

PIPE = asyncio.subprocess.PIPE


def env_for(server: Server, **extra: str) -> dict[str, str]:
    env = {**os.environ, "WIRE_URL": server.base, "WIRE_TOKEN": EDITOR_TOKEN, **extra}
    env.pop("NO_COLOR", None)
    return env


async def run_wire(
    server: Server, *args: str, stdin: bytes | None = None, within: float = 30
) -> tuple[int, str, str]:
    """Run ``wire ARGS`` to completion; its exit code, stdout and stderr."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wire", *args,
        stdin=PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=PIPE, stderr=PIPE, env=env_for(server), cwd=ROOT,
    )  # fmt: skip
    async with asyncio.timeout(within):
        out, err = await proc.communicate(stdin)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def _default_sigint() -> None:
    # A child started from a non-interactive shell may inherit an ignored
    # SIGINT; Ctrl-C is what is under test, so give it the default back.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@asynccontextmanager
async def tail(server: Server, *args: str, stdout: Any = PIPE) -> AsyncIterator[Any]:
    """A running ``wire tail``, yielded once it says it is watching."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wire", "tail", *args,
        stdout=stdout, stderr=PIPE, env=env_for(server), cwd=ROOT, preexec_fn=_default_sigint,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        async with asyncio.timeout(20):
            first = (await proc.stderr.readline()).decode()
        assert "watching" in first, first
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def stop_with_ctrl_c(proc: Any) -> str:
    """SIGINT, as Ctrl-C sends; the exit must be clean. Returns stderr."""
    proc.send_signal(signal.SIGINT)
    async with asyncio.timeout(15):
        err = (await proc.stderr.read()).decode()
        code = await proc.wait()
    assert code in (0, 130), err
    assert "Traceback" not in err
    return str(err)


async def lines(stream: asyncio.StreamReader, n: int, within: float = 15) -> list[str]:
    got: list[str] = []
    async with asyncio.timeout(within):
        while len(got) < n:
            got.append((await stream.readline()).decode().rstrip("\n"))
    return got


def hhmm(stamp: str) -> str:
    return datetime.fromisoformat(stamp).astimezone().strftime("%H:%M")


# -- wire tail ----------------------------------------------------------------------


async def test_tail_json_prints_each_matching_item_and_ctrl_c_exits_cleanly(
    server: Server, http: aiohttp.ClientSession
) -> None:
    async with tail(server, "--tags", "world,culture", "--json") as proc:
        first = await publish(http, server.base, "Quake", ["world/asia"])
        await publish(http, server.base, "Not for this tail", ["sport"])
        second = await publish(http, server.base, "Opera opens", ["culture"])
        got = [orjson.loads(line) for line in await lines(proc.stdout, 2)]
        assert got == [first, second]
        await stop_with_ctrl_c(proc)


async def test_tail_since_0_replays_from_the_start_of_the_stream(
    server: Server, http: aiohttp.ClientSession
) -> None:
    first = await publish(http, server.base, "Before the tail started", ["world"])
    async with tail(server, "--tags", "world", "--since", "0", "--json") as proc:
        second = await publish(http, server.base, "After it started", ["world"])
        got = [orjson.loads(line) for line in await lines(proc.stdout, 2)]
        assert got == [first, second]
        await stop_with_ctrl_c(proc)


async def test_tail_lines_show_time_mark_title_tags_and_updates(
    server: Server, http: aiohttp.ClientSession
) -> None:
    async with tail(server, "--url", server.ws, "--tags", "world") as proc:
        flash = await publish(
            http,
            server.base,
            "Quake hits coast",
            ["world/asia", "science"],
            mark="Breaking",
            urgency=1,
        )
        update = await publish(
            http, server.base, "Quake toll rises", ["world/asia"], guid=flash["guid"]
        )
        routine = await publish(http, server.base, "Talks resume", ["world"])
        got = await lines(proc.stdout, 3)
        await stop_with_ctrl_c(proc)
    assert got == [
        f"{hhmm(flash['published_at'])} ! BREAKING  Quake hits coast  [world/asia, science]",
        f"{hhmm(update['published_at'])}   UPDATED  Quake toll rises (v2)  [world/asia]",
        f"{hhmm(routine['published_at'])}   Talks resume  [world]",
    ]


async def test_tail_on_a_terminal_highlights_urgent_items(
    server: Server, http: aiohttp.ClientSession
) -> None:
    leader, follower = pty.openpty()
    try:
        async with tail(server, "--tags", "world", stdout=follower) as proc:
            os.close(follower)
            await publish(http, server.base, "Routine", ["world"])
            await publish(http, server.base, "Flash", ["world"], mark="Breaking", urgency=2)
            screen = await _read_until(leader, b"Flash")
            await stop_with_ctrl_c(proc)
    finally:
        os.close(leader)
    routine, flash = screen.decode().splitlines()[:2]
    assert "\x1b[1;31mBREAKING  Flash\x1b[0m" in flash
    assert "\x1b[1;31m" not in routine and "Routine" in routine


async def _read_until(fd: int, marker: bytes, within: float = 15) -> bytes:
    """Read a terminal's output until ``marker`` and the end of its line have come."""
    loop = asyncio.get_running_loop()
    readable = asyncio.Event()
    loop.add_reader(fd, readable.set)
    data = b""
    try:
        async with asyncio.timeout(within):
            while marker not in data or not data.endswith(b"\n"):
                await readable.wait()
                readable.clear()
                data += os.read(fd, 4096)
    finally:
        loop.remove_reader(fd)
    return data


async def test_tail_refused_token_exits_with_a_message(
    make_server: Any,
) -> None:
    server = await make_server(subscriber_tokens=("reader",))
    code, out, err = await run_wire(server, "tail", "--tags", "world", "--token", "nope")
    assert code == 1 and out == ""
    assert "401" in err and "Traceback" not in err


def test_a_withdrawal_line_names_the_story_shown_before_and_the_reason() -> None:
    out = io.StringIO()
    printer = Printer(out)
    when = datetime(2024, 6, 1, 10, 0, tzinfo=UTC)
    printer.show(Item("1-0", "g1", 1, "Minister resigns", ("politics",), when))
    printer.show(Withdrawal("2-0", "g1", 2, "legal \x1b[2Jreasons", ("politics",), when))
    printer.show(Withdrawal("3-0", "g-unknown", 4, "", ("world",), None))
    shown = out.getvalue().splitlines()
    local = when.astimezone().strftime("%H:%M")
    assert shown[1] == f"{local} x WITHDRAWN  Minister resigns (v2): legal  [2Jreasons  [politics]"
    assert shown[2] == "--:-- x WITHDRAWN  g-unknown (v4)  [world]"


# -- wire publish --file ------------------------------------------------------------


async def test_publish_file_reports_invalid_lines_and_a_rerun_stores_nothing_twice(
    server: Server, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    batch = tmp_path / "items.jsonl"
    batch.write_text(
        '{"title": "First", "tags": ["world"]}\n'
        "\n"
        '{"title": "Bad urgency", "tags": ["world"], "urgency": 11}\n'
        '{"title": "Third", "tags": ["sport/football"], "mark": "Exclusive"}\n'
        "not json\n"
    )
    code, out, err = await run_wire(server, "publish", "--file", str(batch))
    assert code == 1 and out == "", err
    assert "line 3: 400 invalid_field (urgency):" in err
    assert "line 5: 400 invalid_json" in err
    assert "4 items: 2 published, 0 already published, 2 invalid (line 3, 5)" in err
    _, stored = await get_json(http, server.base + "/v1/items?tags=*")
    assert [i["title"] for i in stored["items"]] == ["Third", "First"]

    code, _, err = await run_wire(server, "publish", "--file", str(batch))
    assert code == 1, err  # the invalid lines are still invalid
    assert "2 published" not in err and "0 published, 2 already published" in err
    _, again = await get_json(http, server.base + "/v1/items?tags=*")
    assert again == stored


async def test_publish_file_from_stdin_with_a_progress_bar_on_a_terminal(
    server: Server, http: aiohttp.ClientSession
) -> None:
    batch = b"".join(b'{"title": "Item %d", "tags": ["world"]}\n' % i for i in range(25))
    leader, follower = pty.openpty()
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "wire", "publish", "--file", "-",
            stdin=PIPE, stdout=PIPE, stderr=follower, env=env_for(server), cwd=ROOT,
        )  # fmt: skip
        os.close(follower)
        async with asyncio.timeout(30):
            await proc.communicate(batch)
        screen = await _read_until(leader, b"25 items:")
    finally:
        os.close(leader)
    assert proc.returncode == 0
    assert b"[##############################] 25/25 100%" in screen
    _, stored = await get_json(http, server.base + "/v1/items?tags=world&limit=100")
    assert len(stored["items"]) == 25


async def test_publish_single_item_still_works(server: Server) -> None:
    code, out, err = await run_wire(server, "publish", "--title", "Hello", "--tag", "world")
    assert code == 0, err
    assert orjson.loads(out)["title"] == "Hello"


# -- wire demo ----------------------------------------------------------------------


async def test_demo_publishes_the_count_of_items_asked_for(
    server: Server, http: aiohttp.ClientSession
) -> None:
    code, out, err = await run_wire(server, "demo", "--count", "5", "--rate", "50", "--seed", "7")
    assert code == 0, err
    _, stored = await get_json(http, server.base + "/v1/items?tags=*&limit=100")
    assert len(stored["items"]) == 5
    assert len(out.splitlines()) == 5
    assert {i["id"] for i in stored["items"]} == {line.split()[0] for line in out.splitlines()}


def test_demo_items_span_a_dozen_tags_with_marks_urgencies_and_updates() -> None:
    import random

    from wire.cli.demo import Newsroom
    from wire.core.items import parse_submission

    room = Newsroom(random.Random(3))
    items = [room.next_item() for _ in range(300)]
    for sample in items:
        parse_submission(sample)  # the API's own validator accepts every one
    tags = {t for i in items for t in i["tags"]}
    assert len(tags) >= 12 and {"world/europe", "sport/football"} <= tags
    assert {i.get("mark") for i in items} >= {"Breaking", "Exclusive", None}
    assert {i["urgency"] for i in items} >= {1, 2, 5}
    guids = [i["guid"] for i in items]
    assert len(set(guids)) < len(guids)  # some items are new versions of a story


@pytest.mark.parametrize(
    "args",
    [
        ["publish", "--file", "x.jsonl", "--title", "t"],
        ["publish", "--title", "no tag"],
        ["demo", "--rate", "0"],
        ["tail"],
    ],
)
def test_usage_errors_exit_2_with_usage(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        main(args)
    assert caught.value.code == 2
    assert "usage: wire" in capsys.readouterr().err
